"""Test kits for plugin authors: conformance suites a backend's own tests subclass.

Nothing here is imported by pliant itself. The suites need pytest, which pliant
does not depend on at run time: install it with your tests (``pip install
'./core[testing]'`` in a checkout of pliant; once released, ``pip install
'pliant-core[testing]'``) and import the kit you need, for example
:mod:`pliant.testing.rendezvous` for a rendezvous store backend.
"""
