"""The ``img-agent`` command line: the only package that prints or exits (entry point: ``main.main``)."""
