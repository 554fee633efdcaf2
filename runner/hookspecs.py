"""Hook specifications: the contract between the ``runbook`` core and its plugins.

Every built-in feature (step types, stores, secret providers, alert sources)
is contributed through these hooks exactly as a third-party plugin would
contribute it. A plugin is a module or object with functions marked by
:data:`runner.plugin.hookimpl` and registered under the ``runbook``
entry-point group::

    [project.entry-points.runbook]
    my_plugin = "my_package.plugin"

All hooks are called with keyword arguments. Registration hooks receive a
typed registry whose ``add`` methods validate what they are given and record
which plugin contributed it; two plugins claiming one name is an error that
names both.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from runner.plugin import hookspec

if TYPE_CHECKING:
    import click

    from runner.registry import (
        AlertSourceRegistry,
        NotifierRegistry,
        RunbookSourceRegistry,
        SecretProviderRegistry,
        StepTypeRegistry,
        StoreRegistry,
        TemplateFilterRegistry,
    )
    from runner.store.records import Event, RunRecord


# --------------------------------------------------------------------------- registration
# Called once per plugin manager, the first time the core needs the registry.


@hookspec
def runbook_register_step_types(registry: StepTypeRegistry) -> None:
    """Contribute step types (``shell``, ``ssh``, ...) with :meth:`StepTypeRegistry.add`.

    :param registry: the step-type registry; ``registry.add(MyStepType())``.

    Every implementation is called. A step type is a :class:`runner.steptypes.StepType`
    subclass: its name is the key a runbook step uses, its ``Config`` pydantic model
    validates that key's value, and ``probe = True`` lets it be used in ``check``,
    ``precondition`` and ``verify``.
    """


@hookspec
def runbook_register_stores(registry: StoreRegistry) -> None:
    """Contribute journal stores by URL scheme with :meth:`StoreRegistry.add`.

    :param registry: the store registry; ``registry.add("sqlite", factory, exists=None)`` where
        ``factory(url: str) -> runner.store.Store`` and, for a store in local files, ``exists(url: str) -> bool``
        finds whether the journal is there without creating it (commands that only read runs never create one).

    Every implementation is called. ``--store URL`` / ``RUNBOOK_STORE`` pick the store
    whose scheme matches the URL.
    """


@hookspec
def runbook_register_secret_providers(registry: SecretProviderRegistry) -> None:
    """Contribute secret reference schemes (``env:``, ``file:``, ``vault:`` ...).

    :param registry: ``registry.add("env", resolver)`` where ``resolver(ref: str) -> str``
        receives the part after the colon and returns the secret value or raises
        :class:`runner.errors.SecretError` (whose message must not contain the value).

    Every implementation is called.
    """


@hookspec
def runbook_register_alert_sources(registry: AlertSourceRegistry) -> None:
    """Contribute alert sources for ``runbook serve`` (``/v1/alerts/<name>``).

    :param registry: ``registry.add(source)`` where ``source`` is a
        :class:`runner.alerts.AlertSource` that authenticates a delivery and normalises
        its payload into alerts.

    Every implementation is called.
    """


@hookspec
def runbook_register_notifiers(registry: NotifierRegistry) -> None:
    """Contribute notifiers: the channel types of the ``notify:`` configuration (``webhook``, ``slack``, ``email``).

    :param registry: ``registry.add(notifier)`` where ``notifier`` is a :class:`runner.notify.channel.Notifier`:
        its ``name`` is the ``type`` a channel names, its ``Config`` pydantic model (``extra="forbid"``) validates
        the channel's other keys, ``secret_fields`` names the keys holding secret references, and
        ``send(message, config, delivery_id=..., timeout=...)`` delivers one message or raises
        :class:`runner.errors.NotifyError`.

    Every implementation is called, the first time a process needs the notifiers (``runbook serve``,
    ``runbook worker``, ``runbook notify``, or the CLI sending after a run when notifications are configured).
    """


@hookspec
def runbook_register_template_filters(registry: TemplateFilterRegistry) -> None:
    """Contribute Jinja2 filters available to every runbook template.

    :param registry: ``registry.add("name", function)``.

    Every implementation is called. Filters run inside the sandbox and must be pure.
    """


@hookspec
def runbook_register_runbook_sources(registry: RunbookSourceRegistry) -> None:
    """Contribute runbooks shipped by a plugin.

    :param registry: ``registry.add_directory(path)`` adds a directory of runbook files
        searched after ``./runbooks/``, ``RUNBOOK_PATH`` and ``--path``.

    Every implementation is called.
    """


# --------------------------------------------------------------------------- command line


@hookspec
def runbook_add_commands(cli: click.Group) -> None:
    """Add sub-commands to the ``runbook`` command line.

    :param cli: the root click group; call ``cli.add_command(command)``.

    Every implementation is called while the CLI is built, so the module defining the
    hook must stay cheap to import: import heavy libraries inside the command.
    """


# --------------------------------------------------------------------------- run lifecycle


@hookspec
def runbook_on_event(event: Event, run: RunRecord) -> None:
    """Observe a journal event after it was durably committed (notifiers, event sinks, audit).

    :param event: the committed event, already redacted.
    :param run: the run's record as of that commit.

    Called through pluggy, so a ``@hookimpl(wrapper=True)`` generator wraps the whole call (timing, audit).
    An exception is logged and never affects the run, but it ends that event's call chain: implementations
    should catch their own errors. They must return quickly: they run on the executor's thread.
    The ``runbook_register_*`` hooks and ``runbook_add_commands`` are called once per plugin (to record who
    contributed what) and cannot be wrappers: a wrapper there is refused with :class:`~runner.errors.PluginError`.
    """


@hookspec(firstresult=True)
def runbook_preflight_action(step_type: Any, config: Any, facts: Any) -> Any:
    """Find what would make one action fail, before the run's first step (pre-flight), without acting.

    :param step_type: the :class:`runner.steptypes.StepType` of the action.
    :param config: the rendered, validated config model instance (read-only), as the action will run.
    :param facts: the :class:`runner.steptypes.PreflightFacts` (unrendered config, target, settings, redactor, env).
    :return: a list of :class:`runner.steptypes.Finding` (empty: nothing found).

    firstresult: the core's implementation calls ``step_type.preflight``. A plugin that answers actions itself
    (a test double of ``runbook_execute_action``) answers their pre-flight here too (``[]``).
    """


@hookspec(firstresult=True)
def runbook_execute_action(step_type: Any, config: Any, ctx: Any) -> Any:
    """Carry out one step action or probe and return its result.

    :param step_type: the :class:`runner.steptypes.StepType` to run.
    :param config: the rendered, validated config model instance. Treat it as read-only: for a step type
        with ``config_read_only`` it is a shallow copy of a model shared by every action of that step.
    :param ctx: the :class:`runner.context.Context` of the step.
    :return: a :class:`runner.steptypes.ActionResult` or :class:`runner.steptypes.Wait`.

    firstresult: the core's implementation calls ``step_type.execute``. Plugins wrap it
    with ``@hookimpl(wrapper=True)`` to time, audit or guard every action.
    """
