"""reproq for Django: a django.tasks backend whose queue is PostgreSQL."""
