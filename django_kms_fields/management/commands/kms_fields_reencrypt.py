"""manage.py kms_fields_reencrypt: bring every stored value under the keyring's current KEY_ARNS."""

from __future__ import annotations

import argparse
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connections

from django_kms_fields.rewrite import Progress, RewriteStats, encrypted_fields, reencrypt_column


def _shard(value: str) -> tuple[int, int]:
    # ArgumentTypeError, not CommandError: argparse turns it into its one-line usage error (and
    # call_command into a CommandError) instead of a traceback.
    try:
        index, count = (int(part) for part in value.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"takes K/N, such as 0/4, not {value!r}") from None
    if count < 1 or not 0 <= index < count:
        raise argparse.ArgumentTypeError(f"{value}: K must be between 0 and N-1, and N at least 1")
    return index, count


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(seconds)
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


class Command(BaseCommand):
    help = (
        "Re-encrypt every encrypted value whose wrapping keys differ from its keyring's KEY_ARNS (read from "
        "the message header, no KMS call), and encrypt legacy plaintext in fields with accept_plaintext. "
        "Batches by primary key, one transaction per batch, and writes a value only if the row still holds "
        "what was read. Safe to rerun; safe to run in several processes with --shard."
    )
    failed_verb = "re-encrypted"
    summary = (
        "{label}: scanned {s.scanned}, rewritten {s.rewritten} ({s.plaintext} of them plaintext), skipped "
        "{s.current} already current and {s.changed_meanwhile} changed meanwhile, failed {s.failed}"
    )
    dry_run_summary = (
        "{label}: scanned {s.scanned}, would rewrite {s.rewritten} ({s.plaintext} of them plaintext), "
        "{s.current} already current, {s.failed} unreadable (dry run: nothing written)"
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("labels", nargs="*", metavar="app_label[.Model[.field]]")
        parser.add_argument("--batch-size", type=int, default=500, help="rows per batch and transaction (default 500)")
        parser.add_argument("--dry-run", action="store_true", help="count what would be rewritten; write nothing")
        parser.add_argument(
            "--database", default=None, metavar="ALIAS",
            help="the database to rewrite (default: where the router writes each model)",
        )
        parser.add_argument(
            "--shard", type=_shard, default=None, metavar="K/N",
            help="only rows whose pk modulo N is K, so that N processes share one table (0 <= K < N)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["batch_size"] < 1:
            raise CommandError("--batch-size must be at least 1.")
        if options["database"] is not None and options["database"] not in connections:
            raise CommandError(f"--database {options['database']!r} is not in DATABASES ({', '.join(connections)}).")
        try:
            fields = self.fields(options["labels"])
        except LookupError as err:
            raise CommandError(str(err)) from None
        if not fields:
            self.stdout.write("No encrypted fields found.")
            return
        verbosity = options["verbosity"]
        interactive = self.stdout.isatty()
        failed = 0
        for model, field in fields:
            label = f"{model._meta.label}.{field.name}"
            try:
                stats = self.rewrite(
                    model, field, batch_size=options["batch_size"], dry_run=options["dry_run"],
                    shard=options["shard"], progress=self._progress_writer(interactive, verbosity),
                    using=options["database"],
                )
            except ValueError as err:
                raise CommandError(f"{label}: {err}") from None
            if interactive and verbosity >= 1:
                self.stdout.write("")
            failed += stats.failed
            self._report(label, stats, options["dry_run"], verbosity)
        if failed:
            raise CommandError(f"{failed} value(s) could not be {self.failed_verb}; see above. Rerun once fixed.")

    def fields(self, labels: list[str]) -> list[Any]:
        return encrypted_fields(labels)

    def rewrite(self, model: Any, field: Any, **options: Any) -> RewriteStats:
        return reencrypt_column(model, field, **options)

    def _progress_writer(self, interactive: bool, verbosity: int):
        def write(progress: Progress) -> None:
            if verbosity < 1:
                return
            percent = 100 * progress.done / progress.total if progress.total else 100.0
            figures = (
                f"{progress.done}/{progress.total} rows {percent:5.1f}% {progress.rate:,.0f} rows/s "
                f"ETA {_duration(progress.eta)}"
            )
            if interactive:
                filled = int(percent / 5)
                self.stdout.write(f"\r{progress.label} [{'#' * filled}{'.' * (20 - filled)}] {figures}", ending="")
                self.stdout.flush()
            else:
                self.stdout.write(f"{progress.label}: {figures}")

        return write

    def _report(self, label: str, stats: RewriteStats, dry_run: bool, verbosity: int) -> None:
        template = self.dry_run_summary if dry_run else self.summary
        line = template.format(label=label, s=stats)
        if stats.failed:
            self.stderr.write(self.style.ERROR(line))
            for failure in stats.failures:
                self.stderr.write(f"  {failure}")
        elif verbosity >= 1:
            self.stdout.write(self.style.SUCCESS(line))
