"""The command line; the only package of fedaudit that prints."""
