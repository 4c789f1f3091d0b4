"""manage.py kms_fields_reindex: fill and rebuild the blind indexes of searchable fields."""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandError, CommandParser
from django.db import router

from django_kms_fields.exceptions import KMSFieldsError
from django_kms_fields.rewrite import reindex_column, searchable_fields
from django_kms_fields.searchable import missing_index_count

from .kms_fields_reencrypt import Command as ReencryptCommand


class Command(ReencryptCommand):
    help = (
        "Write the blind index of every value of a searchable field that has none (the field was just made "
        "searchable) or one under an index key other than INDEX_KEY_ARN (the key was rotated). Batches by "
        "primary key, one transaction per batch, and writes an index only if the row still holds the value "
        "and index that were read. Safe to rerun; safe to run in several processes with --shard. --check only "
        "counts the rows that lookups would miss and fails if there are any."
    )
    summary = (
        "{label}: scanned {s.scanned}, indexed {s.rewritten}, skipped {s.current} already current and "
        "{s.changed_meanwhile} changed meanwhile, failed {s.failed}"
    )
    dry_run_summary = (
        "{label}: scanned {s.scanned}, would index {s.rewritten}, {s.current} already current, "
        "{s.failed} unreadable (dry run: nothing written)"
    )

    failed_verb = "indexed"

    def add_arguments(self, parser: CommandParser) -> None:
        super().add_arguments(parser)
        parser.add_argument(
            "--check", action="store_true",
            help="write nothing; count, per field, the rows lookups would miss and those under a previous key; "
            "exit with an error if any would be missed",
        )
        parser.add_argument(
            "--rebuild", action="store_true",
            help="decrypt every row and rewrite each index that differs, also those that look current: after "
            "changing what a search_normalizer does without renaming it",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        self.rebuild = options["rebuild"]
        if options["check"]:
            return self._check(options)
        return super().handle(*args, **options)

    def rewrite(self, model: Any, field: Any, **options: Any) -> Any:
        try:
            return reindex_column(model, field, rebuild=self.rebuild, **options)
        except KMSFieldsError as err:  # no INDEX_KEY_ARN, KMS unreachable for the root: nothing was written
            raise CommandError(f"{model._meta.label}.{field.name}: {err}") from None

    def fields(self, labels: list[str]) -> list[Any]:
        return searchable_fields(labels)

    def _check(self, options: dict[str, Any]) -> None:
        try:
            fields = searchable_fields(options["labels"])
        except LookupError as err:
            raise CommandError(str(err)) from None
        missed = 0
        for model, field in fields:
            using = options["database"] or router.db_for_write(model)
            try:
                missing = missing_index_count(field, using)
                stale = missing_index_count(field, using, current_key_only=True) - missing
            except KMSFieldsError as err:
                raise CommandError(f"{model._meta.label}.{field.name}: {err}") from None
            missed += missing
            line = (
                f"{model._meta.label}.{field.name} ({using}): {missing} row(s) without an index lookups match, "
                f"{stale} under a previous index key"
            )
            self.stdout.write(self.style.ERROR(line) if missing else line)
        if missed:
            raise CommandError(f"{missed} row(s) would be missed by lookups: run kms_fields_reindex.")
