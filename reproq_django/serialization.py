"""Task arguments as JSON, with a typed envelope for values JSON has no type for.

A value JSON cannot carry is stored as ``{"__reproq__": "<type>", ...}``:

=============  ===========================================================================
type           stored as
=============  ===========================================================================
``datetime``   ``{"__reproq__": "datetime", "value": "2026-01-31T12:00:00+00:00"}``
               (naive datetimes are refused while ``USE_TZ`` is on)
``date``       ``{"__reproq__": "date", "value": "2026-01-31"}``
``timedelta``  ``{"__reproq__": "timedelta", "days": 1, "seconds": 2, "microseconds": 3}``
``Decimal``    ``{"__reproq__": "decimal", "value": "12.50"}``
``UUID``       ``{"__reproq__": "uuid", "value": "…"}``
model          ``{"__reproq__": "model", "model": "app_label.modelname", "pk": …, "db": …}``:
               a reference; the runner fetches the row again before the task runs
a dict using   ``{"__reproq__": "dict", "value": {…}}`` (so user data never looks like an
the key        envelope)
=============  ===========================================================================

Tuples become lists and dict keys become strings, exactly as JSON does. Anything else raises
``TypeError("Unsupported type: …")`` at enqueue, as Django's own backends do; NaN, Infinity and
NUL characters are refused by ``reproq_runner.queries.dumps_json``.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Mapping, Sequence
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db.models import Model
from django.utils import timezone

TYPE_KEY = "__reproq__"

# Values JSON carries as they are: arguments made only of these need no walk (exact types:
# subclasses such as enums take the general path).
_PLAIN_TYPES = frozenset((str, int, float, bool, type(None)))
# From here on Python writes a float in exponent form ("1e+16"), which jsonb keeps as a number
# without a fraction and prints as an integer: such floats travel in an envelope.
_BIG_FLOAT = 1e16


def _float_needs_envelope(value: float) -> bool:
    """A float jsonb would not give back as itself: from 1e16 on (an integer), and -0.0
    (numeric has no negative zero)."""
    return abs(value) >= _BIG_FLOAT or (value == 0.0 and math.copysign(1.0, value) < 0)


def encode_call(args: Sequence[Any], kwargs: dict[str, Any]
                ) -> tuple[list[Any], Any, list[Any], Any]:
    """A task call's arguments as stored, and as a result shows them: ``(encoded args,
    encoded kwargs, decoded args, decoded kwargs)``; the decoded ones are
    ``decode(encoded, fetch_models=False)``. ``kwargs`` must be a dict the caller owns.

    Plain JSON scalars (the usual case) are their own encoding, so they skip both walks."""
    plain = _PLAIN_TYPES
    encoded_args = list(args)
    for value in encoded_args:
        if type(value) not in plain or (type(value) is float and _float_needs_envelope(value)):
            break
    else:
        for key, value in kwargs.items():
            if (type(value) not in plain or type(key) is not str or key == TYPE_KEY
                    or (type(value) is float and _float_needs_envelope(value))):
                break
        else:
            return encoded_args, kwargs, encoded_args, kwargs
    encoded_args = encode(encoded_args)
    encoded_kwargs = encode(kwargs)
    return (encoded_args, encoded_kwargs, decode(encoded_args, fetch_models=False),
            decode(encoded_kwargs, fetch_models=False))


def encode(value: Any) -> Any:
    """``value`` as plain JSON data, typed values wrapped in envelopes."""
    match value:
        case float() if _float_needs_envelope(value) and math.isfinite(value):
            return {TYPE_KEY: "float", "value": float.__repr__(value)}
        case None | bool() | int() | float() | str():
            return value
        case Model():
            return _encode_model(value)
        case datetime():
            return _encode_datetime(value)
        case date():
            return {TYPE_KEY: "date", "value": value.isoformat()}
        case timedelta():
            return {TYPE_KEY: "timedelta", "days": value.days, "seconds": value.seconds,
                    "microseconds": value.microseconds}
        case Decimal():
            return {TYPE_KEY: "decimal", "value": str(value)}
        case uuid.UUID():
            return {TYPE_KEY: "uuid", "value": str(value)}
        case bytes():
            return _decode_utf8(value)
        case Mapping():
            return _encode_mapping(value)
        case Sequence():
            return [encode(item) for item in value]
    raise TypeError(f"Unsupported type: {type(value)} (reproq stores task arguments as JSON; "
                    "see docs/django.md for the types it can carry)")


def decode(value: Any, *, fetch_models: bool = True) -> Any:
    """The Python value of :func:`encode`'s output. With ``fetch_models=False`` model
    references stay as their envelope (reading a result must not query every argument), and so
    does an envelope :func:`encode` would not have written (stored by psql, say): reading it
    must not fail. With ``fetch_models=True`` (running the task) such an envelope raises."""
    if isinstance(value, list):
        return [decode(item, fetch_models=fetch_models) for item in value]
    if not isinstance(value, dict):
        return value
    if TYPE_KEY not in value:
        return {key: decode(item, fetch_models=fetch_models) for key, item in value.items()}
    if fetch_models:
        return _decode_envelope(value, fetch_models)
    try:
        return _decode_envelope(value, fetch_models)
    except (ValueError, TypeError, KeyError, AttributeError, ArithmeticError):
        # Not one of ours (a psql user's "__reproq__" key, a malformed envelope): a reader
        # sees it as stored. The runner, which fetches models, refuses it instead.
        return value


def _decode_envelope(envelope: dict, fetch_models: bool) -> Any:
    kind = envelope[TYPE_KEY]
    match kind:
        case "datetime":
            return datetime.fromisoformat(envelope["value"])
        case "date":
            return date.fromisoformat(envelope["value"])
        case "timedelta":
            return timedelta(days=envelope["days"], seconds=envelope["seconds"],
                             microseconds=envelope["microseconds"])
        case "decimal":
            return Decimal(envelope["value"])
        case "float":
            return float(envelope["value"])
        case "uuid":
            return uuid.UUID(envelope["value"])
        case "dict":
            return {key: decode(item, fetch_models=fetch_models)
                    for key, item in envelope["value"].items()}
        case "model":
            return _fetch_model(envelope) if fetch_models else envelope
    raise ValueError(f"unknown argument envelope type {kind!r}")


def _encode_datetime(value: datetime) -> dict:
    if settings.USE_TZ and timezone.is_naive(value):
        raise TypeError(f"Unsupported type: naive datetime {value.isoformat()} while USE_TZ "
                        "is on; pass an aware datetime")
    return {TYPE_KEY: "datetime", "value": value.isoformat()}


def _encode_model(instance: Model) -> dict:
    if instance.pk is None:
        raise TypeError(f"Unsupported value: unsaved {type(instance).__name__} instance "
                        "(model arguments are stored by primary key)")
    return {TYPE_KEY: "model", "model": instance._meta.label_lower,
            "pk": encode(instance.pk), "db": instance._state.db}


def _fetch_model(envelope: dict) -> Model:
    from django.apps import apps

    model = apps.get_model(envelope["model"])
    manager = model._base_manager
    if envelope.get("db"):
        manager = manager.db_manager(envelope["db"])
    return manager.get(pk=decode(envelope["pk"]))


def _encode_mapping(value: Mapping) -> dict:
    encoded = {_json_key(key): encode(item) for key, item in value.items()}
    if TYPE_KEY in encoded:
        return {TYPE_KEY: "dict", "value": encoded}
    return encoded


def _json_key(key: Any) -> str:
    """Dict keys as JSON writes them (``1`` → ``"1"``, ``True`` → ``"true"``)."""
    match key:
        case str():
            return key
        case bool():
            return "true" if key else "false"
        case None:
            return "null"
        case int():
            return int.__repr__(key)  # as JSON writes an IntEnum key: "1", not "<C.A: 1>"
        case float() if math.isfinite(key):
            return float.__repr__(key)
        case float():
            raise ValueError(f"Out of range float values are not JSON compliant: {key!r}")
    raise TypeError(f"Unsupported type: dict key of {type(key)}")


def _decode_utf8(value: bytes) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise TypeError(f"Unsupported value: {type(value)} that is not UTF-8 text") from None
