"""A test app with no models module: its migrations, chosen per test through MIGRATION_MODULES, take a
populated table through the changes users make when they adopt encrypted fields."""
