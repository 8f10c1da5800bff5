"""``manage.py reproq <subcommand>``: one command, one module per subcommand in reproq_django.cli."""

from importlib import import_module

from django.core.management.base import BaseCommand

# subcommand name -> module in reproq_django.cli exposing add_arguments(parser) and
# handle(command, **options)
SUBCOMMANDS = {
    "migrate-worker": "migrate_worker",
    "worker": "worker",
}


class Command(BaseCommand):
    help = "reproq task queue: migrate-worker, worker, ..."
    # Like Django's own migrate: migrate-worker must run on the very problems the checks report
    # (schema missing or outdated), so checks run per subcommand, not before every one.
    requires_system_checks = []

    def add_arguments(self, parser):
        subparsers = parser.add_subparsers(dest="subcommand", required=True)
        for name, module_name in SUBCOMMANDS.items():
            module = import_module(f"reproq_django.cli.{module_name}")
            sub = subparsers.add_parser(name, help=module.__doc__.strip().splitlines()[0])
            module.add_arguments(sub)

    def handle(self, *args, subcommand, **options):
        module = import_module(f"reproq_django.cli.{SUBCOMMANDS[subcommand]}")
        if getattr(module, "runs_system_checks", True) and not options.get("skip_checks"):
            self.check()
        return module.handle(self, **options)
