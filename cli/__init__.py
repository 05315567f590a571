"""The ``fedclinic`` command: one entry point, one error boundary.

Each subcommand's module lives next to the code it drives (``server.report_cli``,
``client.site_cli``, ``deployment.pki_cli``, ``deployment.deploy_cli``); this package
only dispatches to them.
"""
