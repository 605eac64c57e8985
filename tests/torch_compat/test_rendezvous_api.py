"""torch's ``test/distributed/elastic/rendezvous/api_test.py`` ported to
:mod:`pliant.rendezvous`: ``RendezvousParameters`` and the handler registry.

torch matches its error messages word for word; pliant words its own (naming the value
and the option), so these cases keep torch's exception types and the facts each message
must name, not torch's sentences (a deliberate difference, see CASES.md).
"""

from __future__ import annotations

from typing import Any

import pytest
from pliant.rendezvous import RendezvousHandler, RendezvousInfo, RendezvousParameters


def _params(backend: Any = "dummy_backend", min_nodes: int = 3, max_nodes: int = 6,
            **kwargs: Any) -> RendezvousParameters:
    return RendezvousParameters(backend=backend, endpoint="dummy_endpoint",
                                run_id="dummy_run_id", min_nodes=min_nodes,
                                max_nodes=max_nodes, **kwargs)


def test_init_initializes_params() -> None:
    """torch: RendezvousParametersTest.test_init_initializes_params."""
    params = _params(dummy_param="x")
    assert params.backend == "dummy_backend"
    assert params.endpoint == "dummy_endpoint"
    assert params.run_id == "dummy_run_id"
    assert (params.min_nodes, params.max_nodes) == (3, 6)
    assert params.get("dummy_param") == "x"


def test_init_initializes_params_if_min_nodes_equals_to_1() -> None:
    """torch: RendezvousParametersTest.test_init_initializes_params_if_min_nodes_equals_to_1."""
    params = _params(min_nodes=1)
    assert (params.min_nodes, params.max_nodes) == (1, 6)


def test_init_initializes_params_if_min_and_max_nodes_are_equal() -> None:
    """torch: RendezvousParametersTest, the case of this name."""
    params = _params(max_nodes=3)
    assert (params.min_nodes, params.max_nodes) == (3, 3)


@pytest.mark.parametrize("backend", [None, ""])
def test_init_raises_error_if_backend_is_none_or_empty(backend: Any) -> None:
    """torch: RendezvousParametersTest.test_init_raises_error_if_backend_is_none_or_empty."""
    with pytest.raises(ValueError, match="backend"):
        _params(backend=backend)


@pytest.mark.parametrize("min_nodes", [0, -1, -5])
def test_init_raises_error_if_min_nodes_is_less_than_1(min_nodes: int) -> None:
    """torch: RendezvousParametersTest.test_init_raises_error_if_min_nodes_is_less_than_1."""
    with pytest.raises(ValueError, match=rf"min_nodes.*{min_nodes}|{min_nodes}.*min"):
        _params(min_nodes=min_nodes)


@pytest.mark.parametrize("max_nodes", [2, 1, -2])
def test_init_raises_error_if_max_nodes_is_less_than_min_nodes(max_nodes: int) -> None:
    """torch: RendezvousParametersTest, the case of this name."""
    with pytest.raises(ValueError) as raised:
        _params(max_nodes=max_nodes)
    assert str(max_nodes) in str(raised.value) and "3" in str(raised.value)


def test_get_returns_none_if_key_does_not_exist() -> None:
    """torch: RendezvousParametersTest.test_get_returns_none_if_key_does_not_exist."""
    assert _params().get("dummy_param") is None


def test_get_returns_default_if_key_does_not_exist() -> None:
    """torch: RendezvousParametersTest.test_get_returns_default_if_key_does_not_exist."""
    assert _params().get("dummy_param", default="x") == "x"


def test_get_as_bool_returns_none_if_key_does_not_exist() -> None:
    """torch: RendezvousParametersTest.test_get_as_bool_returns_none_if_key_does_not_exist."""
    assert _params().get_as_bool("dummy_param") is None


def test_get_as_bool_returns_default_if_key_does_not_exist() -> None:
    """torch: RendezvousParametersTest.test_get_as_bool_returns_default_if_key_does_not_exist."""
    assert _params().get_as_bool("dummy_param", default=True) is True


@pytest.mark.parametrize("value", ["1", "True", "tRue", "T", "t", "yEs", "Y", 1, True])
def test_get_as_bool_returns_true_if_value_represents_true(value: Any) -> None:
    """torch: RendezvousParametersTest.test_get_as_bool_returns_true_if_value_represents_true."""
    assert _params(dummy_param=value).get_as_bool("dummy_param") is True


@pytest.mark.parametrize("value", ["0", "False", "faLse", "F", "f", "nO", "N", 0, False])
def test_get_as_bool_returns_false_if_value_represents_false(value: Any) -> None:
    """torch: RendezvousParametersTest.test_get_as_bool_returns_false_if_value_represents_false."""
    assert _params(dummy_param=value).get_as_bool("dummy_param") is False


@pytest.mark.parametrize("value", ["01", "Flse", "Ture", "g", "4", "_", "truefalse", 2, -1])
def test_get_as_bool_raises_error_if_value_is_invalid(value: Any) -> None:
    """torch: RendezvousParametersTest.test_get_as_bool_raises_error_if_value_is_invalid."""
    params = _params(dummy_param=value)
    with pytest.raises(ValueError, match="dummy_param"):
        params.get_as_bool("dummy_param")


def test_get_as_int_returns_none_if_key_does_not_exist() -> None:
    """torch: RendezvousParametersTest.test_get_as_int_returns_none_if_key_does_not_exist."""
    assert _params().get_as_int("dummy_param") is None


def test_get_as_int_returns_default_if_key_does_not_exist() -> None:
    """torch: RendezvousParametersTest.test_get_as_int_returns_default_if_key_does_not_exist."""
    assert _params().get_as_int("dummy_param", default=5) == 5


@pytest.mark.parametrize("value", ["0", "-10", "5", "  4", "4  ", " 4 ", 0, -4, 3])
def test_get_as_int_returns_integer_if_value_represents_integer(value: Any) -> None:
    """torch: RendezvousParametersTest, the case of this name."""
    assert _params(dummy_param=value).get_as_int("dummy_param") == int(value)


@pytest.mark.parametrize("value", ["a", "0a", "3b", "abc"])
def test_get_as_int_raises_error_if_value_is_invalid(value: Any) -> None:
    """torch: RendezvousParametersTest.test_get_as_int_raises_error_if_value_is_invalid: the
    error names the option, as torch's does."""
    params = _params(dummy_param=value)
    with pytest.raises(ValueError, match="dummy_param"):
        params.get_as_int("dummy_param")


class _DummyRendezvousHandler(RendezvousHandler):
    def __init__(self, params: RendezvousParameters) -> None:
        self.params = params

    def get_backend(self) -> str:
        return "dummy_backend"

    def next_rendezvous(self) -> RendezvousInfo:
        raise NotImplementedError()

    def is_closed(self) -> bool:
        return False

    def set_closed(self) -> None:
        pass

    def num_nodes_waiting(self) -> int:
        return 0

    def get_run_id(self) -> str:
        return ""

    def shutdown(self) -> bool:
        return False


def _create_handler(params: RendezvousParameters) -> RendezvousHandler:
    return _DummyRendezvousHandler(params)


def _registry() -> Any:
    from pliant.rendezvous import RendezvousHandlerRegistry

    return RendezvousHandlerRegistry()


def test_register_registers_once_if_called_twice_with_same_creator() -> None:
    """torch: RendezvousHandlerRegistryTest, the case of this name."""
    registry = _registry()
    registry.register("dummy_backend", _create_handler)
    registry.register("dummy_backend", _create_handler)
    handler = registry.create_handler(_params(min_nodes=1, max_nodes=1))
    assert isinstance(handler, _DummyRendezvousHandler)


def test_register_raises_error_if_called_twice_with_different_creators() -> None:
    """torch: RendezvousHandlerRegistryTest, the case of this name."""
    registry = _registry()
    registry.register("dummy_backend", _create_handler)
    with pytest.raises(ValueError, match="dummy_backend"):
        registry.register("dummy_backend", lambda p: _DummyRendezvousHandler(p))


def test_create_handler_returns_handler() -> None:
    """torch: RendezvousHandlerRegistryTest.test_create_handler_returns_handler."""
    registry = _registry()
    registry.register("dummy_backend", _create_handler)
    params = _params(min_nodes=1, max_nodes=1)
    handler = registry.create_handler(params)
    assert isinstance(handler, _DummyRendezvousHandler)
    assert handler.params is params


def test_create_handler_raises_error_if_backend_is_not_registered() -> None:
    """torch: RendezvousHandlerRegistryTest, the case of this name."""
    with pytest.raises(ValueError, match="dummy_backend"):
        _registry().create_handler(_params(min_nodes=1, max_nodes=1))


def test_create_handler_raises_error_if_backend_names_do_not_match() -> None:
    """torch: RendezvousHandlerRegistryTest, the case of this name."""
    registry = _registry()
    registry.register("dummy_backend_2", _create_handler)
    params = _params(min_nodes=1, max_nodes=1)
    params.backend = "dummy_backend_2"
    with pytest.raises(RuntimeError, match="dummy_backend_2"):
        registry.create_handler(params)
