"""How metrics and events get from the caller to the handlers, in this process or, from a
worker, through its agent. Private: :mod:`pliant.metrics` and :mod:`pliant.events` are the
API; a handler plugin needs only their ``types``.

- :mod:`~pliant._delivery.context`: the tags every record carries (run id, node, rank...);
- :mod:`~pliant._delivery.dispatcher`: the bounded queue and the one thread that empties it
  into the handlers;
- :mod:`~pliant._delivery.handlers`: which handlers a record goes to, one set per kind;
- :mod:`~pliant._delivery.relay_client` and :mod:`~pliant._delivery.relay`: a worker's
  records sent to its agent's handlers over a local socket.

Nothing here imports the APIs above it: the metrics API registers how drops are reported
(:meth:`~pliant._delivery.dispatcher.Dispatcher.report_drops_with`), the faces how handlers
are built from the environment (:meth:`~pliant._delivery.handlers.HandlerSet.load_with`).
"""
