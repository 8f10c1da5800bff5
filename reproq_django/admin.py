"""Read-only admin for task runs, workers and queue switches."""

from django.contrib import admin
from django.utils import timezone

from reproq_django.models import QueueControl, TaskRun, Worker


class ReadOnlyAdmin(admin.ModelAdmin):
    """State changes go through reproq's SQL functions, never through the admin."""

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class LeaseStateFilter(admin.SimpleListFilter):
    title = "lease state"
    parameter_name = "lease"

    def lookups(self, request, model_admin):
        return [("held", "held"), ("expired", "expired"), ("none", "no lease")]

    def queryset(self, request, queryset):
        now = timezone.now()
        match self.value():
            case "held":
                return queryset.filter(leased_until__gte=now)
            case "expired":
                return queryset.filter(leased_until__lt=now)
            case "none":
                return queryset.filter(leased_until__isnull=True)
        return queryset


@admin.register(TaskRun)
class TaskRunAdmin(ReadOnlyAdmin):
    list_display = ["result_id", "task_path", "queue_name", "status", "priority", "attempts",
                    "max_attempts", "leased_by", "leased_until", "enqueued_at", "finished_at"]
    list_filter = ["status", "queue_name", "task_path", LeaseStateFilter]
    search_fields = ["task_path"]
    show_full_result_count = False  # counting a large queue on every page view is costly

    def get_search_results(self, request, queryset, search_term):
        """A number searches ids as well as task paths."""
        results, may_have_duplicates = super().get_search_results(request, queryset,
                                                                  search_term)
        term = search_term.strip()
        if term.isascii() and term.isdigit() and int(term) < 2**63:
            results |= queryset.filter(result_id=int(term))
        return results, may_have_duplicates


@admin.register(Worker)
class WorkerAdmin(ReadOnlyAdmin):
    list_display = ["worker_id", "hostname", "pid", "queues", "concurrency", "version",
                    "started_at", "last_seen_at"]
    search_fields = ["worker_id", "hostname"]


@admin.register(QueueControl)
class QueueControlAdmin(ReadOnlyAdmin):
    list_display = ["queue_name", "paused", "updated_at"]
    list_filter = ["paused"]
