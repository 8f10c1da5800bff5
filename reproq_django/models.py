"""Read-only views of reproq's tables for the admin and for queries.

``managed = False``: the SQL migrations own these tables, and every state change goes through
a ``reproq.*`` function (see ``reproq_runner.queries``). Never save these models.
"""

from django.db import models



class TextArrayField(models.Field):
    """A PostgreSQL ``text[]`` column read as a list. The models are read-only, so this needs
    neither ``django.contrib.postgres`` in INSTALLED_APPS nor array lookups."""

    def db_type(self, connection):
        return "text[]"

    def from_db_value(self, value, expression, connection):
        return None if value is None else list(value)


STATUS_CHOICES = [(status, status.title()) for status in
                  ("READY", "WAITING", "RUNNING", "SUCCESSFUL", "FAILED", "CANCELLED")]


class TaskRun(models.Model):
    result_id = models.BigIntegerField(primary_key=True)
    queue_name = models.TextField()
    priority = models.SmallIntegerField()
    run_after = models.DateTimeField()
    task_path = models.TextField()
    spec_json = models.JSONField()
    spec_hash = models.BinaryField()
    dedup = models.BooleanField()
    status = models.TextField(choices=STATUS_CHOICES)
    attempts = models.IntegerField()
    max_attempts = models.IntegerField()
    timeout_seconds = models.IntegerField()
    lock_key = models.TextField(null=True)
    concurrency_key = models.TextField(null=True)
    concurrency_limit = models.IntegerField(null=True)
    worker_ids = TextArrayField()
    return_json = models.JSONField(null=True)
    errors_json = models.JSONField()
    metadata_json = models.JSONField()
    leased_by = models.TextField(null=True)
    leased_until = models.DateTimeField(null=True)
    lease_token = models.UUIDField(null=True)
    cancel_requested = models.BooleanField()
    expires_at = models.DateTimeField(null=True)
    logs_uri = models.TextField(null=True)
    enqueued_at = models.DateTimeField()
    started_at = models.DateTimeField(null=True)
    last_attempted_at = models.DateTimeField(null=True)
    finished_at = models.DateTimeField(null=True)

    class Meta:
        managed = False
        db_table = 'reproq"."task_runs'
        ordering = ["-result_id"]
        verbose_name = "task run"

    def __str__(self):
        return f"{self.result_id} {self.task_path} [{self.status}]"


class Worker(models.Model):
    worker_id = models.TextField(primary_key=True)
    hostname = models.TextField()
    pid = models.IntegerField()
    queues = TextArrayField()
    concurrency = models.IntegerField()
    version = models.TextField()
    started_at = models.DateTimeField()
    last_seen_at = models.DateTimeField()

    class Meta:
        managed = False
        db_table = 'reproq"."workers'
        ordering = ["worker_id"]

    def __str__(self):
        return self.worker_id


class QueueControl(models.Model):
    queue_name = models.TextField(primary_key=True)
    paused = models.BooleanField()
    updated_at = models.DateTimeField()

    class Meta:
        managed = False
        db_table = 'reproq"."queue_controls'
        ordering = ["queue_name"]

    def __str__(self):
        return f"{self.queue_name} ({'paused' if self.paused else 'active'})"
