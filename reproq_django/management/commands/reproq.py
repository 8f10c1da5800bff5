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

    def add_arguments(self, parser):
        subparsers = parser.add_subparsers(dest="subcommand", required=True)
        for name, module_name in SUBCOMMANDS.items():
            module = import_module(f"reproq_django.cli.{module_name}")
            sub = subparsers.add_parser(name, help=module.__doc__.strip().splitlines()[0])
            module.add_arguments(sub)

    def handle(self, *args, subcommand, **options):
        module = import_module(f"reproq_django.cli.{SUBCOMMANDS[subcommand]}")
        return module.handle(self, **options)
