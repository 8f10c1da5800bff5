"""Django's own tasks test suite against ReproqBackend (see tests/django/conformance.py)."""

from tests.django.conformance import conformance_test_cases

globals().update(conformance_test_cases())
