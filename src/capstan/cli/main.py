"""The ``capstan`` command: run the embedded server, and talk to it like kubectl."""

from __future__ import annotations

import functools
import json
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any, ParamSpec, TypeVar

import typer
import yaml

from capstan import __version__
from capstan.api.errors import ApiError, GoneError, NotFoundError
from capstan.api.registry import Registry, ResourceType
from capstan.cli import autoscaling as autoscaling_cli
from capstan.cli import printers
from capstan.cli.client import ApiClient, UnreachableError
from capstan.cli.config import ConfigError, default_data_dir, resolve_config
from capstan.cli.describe import describe as describe_object
from capstan.cli.manifests import ManifestError, apply_document, read_documents, validate_all
from capstan.cli.operator import operator

app = typer.Typer(name="capstan", no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="Capstan: Kubernetes API semantics on one machine, and the tools to drive it.")

Obj = dict[str, Any]
P = ParamSpec("P")
R = TypeVar("R")


class CliError(Exception):
    """A client-side problem, printed as ``error: ...``."""


# ---- options shared by the client commands ------------------------------------------------------

ServerOpt = Annotated[str | None, typer.Option("--server", help="API address, e.g. http://127.0.0.1:8080.",
                                               show_default=False)]
TokenOpt = Annotated[str | None, typer.Option("--token", help="Bearer token.", show_default=False)]
DataDirOpt = Annotated[Path | None, typer.Option("--data-dir", help="Read DIR/config.yaml of a local server.",
                                                 show_default=False)]
NamespaceOpt = Annotated[str | None, typer.Option("--namespace", "-n", help="Namespace (default: default).",
                                                  show_default=False)]
AllNamespacesOpt = Annotated[bool, typer.Option("--all-namespaces", "-A", help="Across all namespaces.")]


def _echo_error(message: str) -> None:
    typer.echo(message, err=True)


def handle_errors(command: Callable[P, R]) -> Callable[P, R]:
    """Print errors the way kubectl does and exit 1, without tracebacks."""

    @functools.wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except ApiError as exc:
            _echo_error(f"Error from server ({exc.reason}): {exc.message}")
        except ManifestError as exc:
            for message in exc.messages:
                _echo_error(f"error: {message}")
        except (CliError, ConfigError, UnreachableError) as exc:
            _echo_error(f"error: {exc}")
        except KeyboardInterrupt:
            raise typer.Exit(130) from None
        raise typer.Exit(1)

    return wrapper


def _client(ctx: typer.Context, server: str | None, token: str | None, data_dir: Path | None) -> ApiClient:
    defaults: dict[str, Any] = ctx.obj or {}
    config = resolve_config(server=server or defaults.get("server"), token=token or defaults.get("token"),
                            data_dir=data_dir or defaults.get("data_dir"))
    return ApiClient.from_config(config)


@app.callback()
def main(ctx: typer.Context, server: ServerOpt = None, token: TokenOpt = None, data_dir: DataDirOpt = None) -> None:
    """Connection options given here apply to every command (a command's own options win)."""
    ctx.obj = {"server": server, "token": token, "data_dir": data_dir}


# ---- names --------------------------------------------------------------------------------------

def _lookup(registry: Registry, name: str) -> ResourceType:
    try:
        return registry.lookup(name)
    except NotFoundError:
        raise CliError(f'the server doesn\'t have a resource type "{name}"') from None


def _expand_kinds(registry: Registry, text: str) -> list[ResourceType]:
    """``pods``, ``po,deploy`` or a category such as ``all``."""
    kinds: list[ResourceType] = []
    for name in text.split(","):
        in_category = [rt for rt in registry if name in rt.categories]
        found = in_category if in_category and name not in {rt.plural for rt in registry} else [_lookup(registry, name)]
        kinds.extend(rt for rt in found if rt not in kinds)
    return kinds


def _targets(registry: Registry, args: list[str]) -> list[tuple[ResourceType, list[str]]]:
    """``KIND [NAME...]`` or ``KIND/NAME...`` into (kind, names) groups."""
    if not args:
        raise CliError("you must specify the type of resource, e.g. `capstan get pods`")
    if "/" in args[0]:
        groups: dict[ResourceType, list[str]] = {}
        for arg in args:
            kind, slash, name = arg.partition("/")
            if not slash or not name:
                raise CliError(f"there is no need to specify a resource type as a separate argument when "
                               f"passing arguments in resource/name form (got {arg!r})")
            groups.setdefault(_lookup(registry, kind), []).append(name)
        return list(groups.items())
    kinds = _expand_kinds(registry, args[0])
    if args[1:] and len(kinds) > 1:
        raise CliError("names can only be given for a single resource type")
    return [(rt, args[1:]) for rt in kinds]


def _namespace_for(rt: ResourceType, namespace: str | None, all_namespaces: bool) -> str | None:
    if not rt.namespaced or all_namespaces:
        return None
    return namespace or "default"


def _single_target(registry: Registry, kind_or_ref: str, name: str | None) -> tuple[ResourceType, str]:
    if "/" in kind_or_ref:
        kind, _, ref_name = kind_or_ref.partition("/")
        if name:
            raise CliError(f"give either {kind_or_ref} or {kind} {name}, not both")
        return _lookup(registry, kind), ref_name
    if not name:
        raise CliError(f"a resource name is required: {kind_or_ref}/NAME or {kind_or_ref} NAME")
    return _lookup(registry, kind_or_ref), name


# ---- output -------------------------------------------------------------------------------------

def _dump(obj: Obj, output: str) -> str:
    if output == "json":
        return json.dumps(obj, indent=4) + "\n"
    return yaml.safe_dump(obj, sort_keys=False, default_flow_style=False)


def _as_list(items: list[Obj]) -> Obj:
    return {"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": ""}, "items": items}


def _no_resources(namespace: str | None, all_namespaces: bool) -> str:
    if all_namespaces or namespace is None:
        return "No resources found"
    return f"No resources found in {namespace} namespace."


OUTPUTS = ("", "wide", "yaml", "json", "name")


# ---- server -------------------------------------------------------------------------------------

def _extended_resources(values: list[str]) -> dict[str, int]:
    found: dict[str, int] = {}
    for value in values:
        name, eq, count = value.partition("=")
        if not eq or not name or not count.isdigit():
            raise typer.BadParameter(f"expected name=count, e.g. example.com/gpu=2; got {value!r}",
                                     param_hint="--extended-resource")
        found[name] = int(count)
    return found


@app.command()
def server(
    data_dir: Annotated[Path | None, typer.Option("--data-dir", help="State, token, logs (default: the user "
                                                  "data directory).", show_default=False)] = None,
    port: Annotated[int, typer.Option(help="Port to listen on; 0 picks a free one.")] = 0,
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    node_name: Annotated[str | None, typer.Option(help="Name of the local node (default: the hostname).")] = None,
    cpu: Annotated[str | None, typer.Option(help="CPU the node offers, e.g. 4 or 3500m (default: all).")] = None,
    memory: Annotated[str | None, typer.Option(help="Memory the node offers, e.g. 8Gi (default: all).")] = None,
    extended_resource: Annotated[list[str] | None, typer.Option(
        help="An extended resource the node offers, name=count (repeatable).")] = None,
    keep_workloads: Annotated[bool, typer.Option(help="Leave pod processes running when the server stops.")] = False,
) -> None:
    """Run the embedded control plane: API, controllers, scheduler and node agent."""
    from capstan.server.embedded import run_server
    from capstan.server.settings import ServerSettings

    settings = ServerSettings(
        data_dir=(data_dir or default_data_dir()).resolve(), host=host, port=port, node_name=node_name,
        cpu=cpu, memory=memory, extended_resources=_extended_resources(extended_resource or []),
        keep_workloads=keep_workloads)
    run_server(settings)


app.command()(operator)


# ---- apply --------------------------------------------------------------------------------------

@app.command()
@handle_errors
def apply(
    ctx: typer.Context,
    filename: Annotated[list[str], typer.Option("--filename", "-f", help="File, directory or - (stdin).")],
    namespace: NamespaceOpt = None,
    server: ServerOpt = None, token: TokenOpt = None, data_dir: DataDirOpt = None,
) -> None:
    """Create or update objects from YAML/JSON manifests; nothing is written unless all are valid."""
    documents = read_documents(filename)
    if not documents:
        raise CliError("no objects passed to apply")
    with _client(ctx, server, token, data_dir) as client:
        for doc in validate_all(documents, client, namespace):  # in dependency order (APPLY_ORDER)
            assert doc.rt is not None
            written, outcome = apply_document(doc, client)
            typer.echo(f"{printers.resource_ref(doc.rt, written['metadata']['name'])} {outcome}")


# ---- get ----------------------------------------------------------------------------------------

def _fetch(client: ApiClient, rt: ResourceType, names: list[str], namespace: str | None, selector: str,
           field_selector: str, errors: list[ApiError]) -> tuple[list[Obj], str]:
    if not names:
        return client.list_all(rt, namespace, label_selector=selector, field_selector=field_selector)
    found = []
    for name in names:
        try:
            found.append(client.get(rt, name, namespace))
        except NotFoundError as exc:
            errors.append(exc)
    return found, ""


def _print_objects(rt: ResourceType, items: list[Obj], output: str, *, all_namespaces: bool,
                   show_kind: bool, header: bool = True) -> None:
    if output == "name":
        for obj in items:
            typer.echo(printers.resource_ref(rt, obj["metadata"]["name"]))
        return
    headers, rows = printers.table_rows(rt, items, wide=output == "wide", all_namespaces=all_namespaces)
    if show_kind and "NAME" in headers:
        position = headers.index("NAME")
        for row in rows:
            row[position] = printers.resource_ref(rt, row[position])
    typer.echo(printers.render_table(headers if header else None, rows), nl=False)


@app.command()
@handle_errors
def get(
    ctx: typer.Context,
    args: Annotated[list[str], typer.Argument(help="KIND [NAME...] or KIND/NAME...", show_default=False)],
    namespace: NamespaceOpt = None,
    all_namespaces: AllNamespacesOpt = False,
    selector: Annotated[str, typer.Option("--selector", "-l", help="Label selector.")] = "",
    field_selector: Annotated[str, typer.Option("--field-selector", help="Field selector.")] = "",
    output: Annotated[str, typer.Option("--output", "-o", help="wide, yaml, json or name.")] = "",
    watch: Annotated[bool, typer.Option("--watch", "-w", help="After listing, print changes.")] = False,
    server: ServerOpt = None, token: TokenOpt = None, data_dir: DataDirOpt = None,
) -> None:
    """Show objects as a table, YAML, JSON or names."""
    if output not in OUTPUTS:
        raise CliError(f"unknown output format {output!r}; use one of wide, yaml, json, name")
    with _client(ctx, server, token, data_dir) as client:
        targets = _targets(client.registry, args)
        errors: list[ApiError] = []
        collected: list[tuple[ResourceType, list[Obj], str]] = []
        for rt, names in targets:
            ns = _namespace_for(rt, namespace, all_namespaces)
            items, version = _fetch(client, rt, names, ns, selector, field_selector, errors)
            collected.append((rt, items, version))
        single = len(targets) == 1 and len(targets[0][1]) == 1
        by_name = any(names for _, names in targets)
        empty_note = None if by_name or watch else _no_resources(
            _namespace_for(targets[0][0], namespace, all_namespaces), all_namespaces)
        _print_collected(collected, output, all_namespaces, single=single, empty_note=empty_note)
        if watch:
            if len(collected) != 1:
                raise CliError("watch is only supported on a single resource type")
            rt, items, version = collected[0]
            names = targets[0][1]
            field = f"metadata.name={names[0]}" if len(names) == 1 else field_selector
            _watch_and_print(client, rt, _namespace_for(rt, namespace, all_namespaces), version, selector,
                             field, output, all_namespaces, header_shown=bool(items))
        for error in errors:
            _echo_error(f"Error from server ({error.reason}): {error.message}")
        if errors:
            raise typer.Exit(1)


def _print_collected(collected: list[tuple[ResourceType, list[Obj], str]], output: str, all_namespaces: bool, *,
                     single: bool, empty_note: str | None) -> None:
    if output in ("yaml", "json"):
        items = [obj for _, objs, _ in collected for obj in objs]
        if single and len(items) == 1:
            typer.echo(_dump(items[0], output), nl=False)
        elif items or not single:
            typer.echo(_dump(_as_list(items), output), nl=False)
        return
    non_empty = [(rt, items) for rt, items, _ in collected if items]
    if not non_empty:
        if empty_note:
            _echo_error(empty_note)
        return
    for position, (rt, items) in enumerate(non_empty):
        if position:
            typer.echo("")
        _print_objects(rt, items, output, all_namespaces=all_namespaces, show_kind=len(collected) > 1)


def _watch_events(client: ApiClient, rt: ResourceType, namespace: str | None, version: str, selector: str,
                  field_selector: str) -> Iterator[tuple[str, Obj]]:
    """Watch forever: resume where a stream ended, list again when the version expired."""
    while True:
        try:
            for event in client.watch(rt, namespace, resource_version=version or None, label_selector=selector,
                                      field_selector=field_selector, bookmarks=True):
                version = str((event.object.get("metadata") or {}).get("resourceVersion") or version)
                if event.type != "BOOKMARK":
                    yield event.type, event.object
        except GoneError:
            _, version = client.list_all(rt, namespace, label_selector=selector, field_selector=field_selector)


def _watch_and_print(client: ApiClient, rt: ResourceType, namespace: str | None, version: str, selector: str,
                     field_selector: str, output: str, all_namespaces: bool, *, header_shown: bool) -> None:
    for _, obj in _watch_events(client, rt, namespace, version, selector, field_selector):
        if output in ("yaml", "json"):
            typer.echo(_dump(obj, output) + ("---" if output == "yaml" else ""), nl=output == "yaml")
        else:
            _print_objects(rt, [obj], output, all_namespaces=all_namespaces, show_kind=False,
                           header=not header_shown)
            header_shown = True
        sys.stdout.flush()


# ---- describe -----------------------------------------------------------------------------------

def _events_for(client: ApiClient, obj: Obj) -> list[Obj]:
    meta = obj.get("metadata") or {}
    events_rt = client.registry.lookup("events")
    items, _ = client.list_all(events_rt, meta.get("namespace") or None,
                               field_selector=f"involvedObject.uid={meta.get('uid')}")
    return items


@app.command()
@handle_errors
def describe(
    ctx: typer.Context,
    kind: Annotated[str, typer.Argument(help="KIND or KIND/NAME.")],
    names: Annotated[list[str] | None, typer.Argument(help="NAME...", show_default=False)] = None,
    namespace: NamespaceOpt = None,
    all_namespaces: AllNamespacesOpt = False,
    selector: Annotated[str, typer.Option("--selector", "-l", help="Label selector.")] = "",
    server: ServerOpt = None, token: TokenOpt = None, data_dir: DataDirOpt = None,
) -> None:
    """Show an object in readable sections, with its events."""
    with _client(ctx, server, token, data_dir) as client:
        errors: list[ApiError] = []
        shown = 0
        for rt, targets in _targets(client.registry, [kind, *(names or [])]):
            ns = _namespace_for(rt, namespace, all_namespaces)
            objects, _ = _fetch(client, rt, targets, ns, selector, "", errors)
            for obj in objects:
                if shown:
                    typer.echo("\n")
                typer.echo(describe_object(rt, obj, _events_for(client, obj)), nl=False)
                shown += 1
        for error in errors:
            _echo_error(f"Error from server ({error.reason}): {error.message}")
        if errors:
            raise typer.Exit(1)
        if not shown:
            _echo_error(_no_resources(namespace or "default", all_namespaces))


# ---- delete -------------------------------------------------------------------------------------

CASCADES = {"background": "Background", "foreground": "Foreground", "orphan": "Orphan",
            "true": "Background", "false": "Orphan"}


def _wait_gone(client: ApiClient, rt: ResourceType, name: str, namespace: str | None, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            client.get(rt, name, namespace)
        except NotFoundError:
            return True
        time.sleep(0.2)
    return False


@app.command()
@handle_errors
def delete(
    ctx: typer.Context,
    args: Annotated[list[str] | None, typer.Argument(help="KIND NAME... or KIND/NAME...", show_default=False)] = None,
    filename: Annotated[list[str] | None, typer.Option("--filename", "-f", help="Delete what these files name.")]
    = None,
    namespace: NamespaceOpt = None,
    selector: Annotated[str, typer.Option("--selector", "-l", help="Delete what matches.")] = "",
    cascade: Annotated[str, typer.Option(help="background, foreground or orphan.")] = "background",
    wait: Annotated[bool, typer.Option("--wait", help="Wait until the objects are gone.")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds --wait waits at most.")] = 120.0,
    server: ServerOpt = None, token: TokenOpt = None, data_dir: DataDirOpt = None,
) -> None:
    """Delete objects by name, label selector or manifest."""
    policy = CASCADES.get(cascade.lower())
    if policy is None:
        raise CliError(f"--cascade must be background, foreground or orphan; got {cascade!r}")
    with _client(ctx, server, token, data_dir) as client:
        victims = _delete_targets(client, args or [], filename or [], namespace, selector)
        failed = False
        for rt, name, ns in victims:
            try:
                client.delete(rt, name, ns, propagation_policy=policy)
            except ApiError as exc:
                _echo_error(f"Error from server ({exc.reason}): {exc.message}")
                failed = True
                continue
            typer.echo(f'{printers.resource_ref(rt, "").rstrip("/")} "{name}" deleted')
            if wait and not _wait_gone(client, rt, name, ns, timeout):
                _echo_error(f'error: timed out waiting for {printers.resource_ref(rt, name)} to be deleted')
                failed = True
        if failed:
            raise typer.Exit(1)


def _delete_targets(client: ApiClient, args: list[str], files: list[str], namespace: str | None,
                    selector: str) -> list[tuple[ResourceType, str, str | None]]:
    if files:
        if args:
            raise CliError("give either -f FILE or KIND NAME, not both")
        victims = []
        for doc in read_documents(files):
            if not isinstance(doc.obj, dict):
                raise ManifestError([f"{doc.label}: expected a mapping with apiVersion, kind and metadata"])
            rt = client.registry.for_object(doc.obj)
            ns = _namespace_for(rt, (doc.obj.get("metadata") or {}).get("namespace") or namespace, False)
            victims.append((rt, doc.name, ns))
        return victims
    if not args:
        raise CliError("you must specify what to delete: KIND NAME..., KIND/NAME, -l SELECTOR or -f FILE")
    victims = []
    for rt, names in _targets(client.registry, args):
        ns = _namespace_for(rt, namespace, False)
        if not names:
            if not selector:
                raise CliError(f"resource(s) were provided, but no name was specified for {rt.plural}; "
                               f"give names or -l SELECTOR")
            items, _ = client.list_all(rt, ns, label_selector=selector)
            names = [obj["metadata"]["name"] for obj in items]
        victims.extend((rt, name, ns) for name in names)
    return victims


# ---- logs, scale, events ------------------------------------------------------------------------

@app.command()
@handle_errors
def logs(
    ctx: typer.Context,
    pod: Annotated[str, typer.Argument(help="POD or pod/POD.")],
    container: Annotated[str | None, typer.Option("--container", "-c", help="Container name.")] = None,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Stream new output until the pod ends.")] = False,
    tail: Annotated[int | None, typer.Option("--tail", help="Only the last N lines.")] = None,
    namespace: NamespaceOpt = None,
    server: ServerOpt = None, token: TokenOpt = None, data_dir: DataDirOpt = None,
) -> None:
    """Print a container's log."""
    name = pod.split("/", 1)[1] if pod.startswith(("pod/", "pods/", "po/")) else pod
    with _client(ctx, server, token, data_dir) as client:
        out = sys.stdout.buffer
        for chunk in client.logs(name, namespace or "default", container=container, follow=follow,
                                 tail_lines=tail if tail is not None and tail >= 0 else None):
            out.write(chunk)
            out.flush()


@app.command()
@handle_errors
def scale(
    ctx: typer.Context,
    kind: Annotated[str, typer.Argument(help="KIND/NAME or KIND.")],
    replicas: Annotated[int, typer.Option("--replicas", help="Desired replicas.", min=0)],
    name: Annotated[str | None, typer.Argument(help="NAME when KIND is given alone.", show_default=False)] = None,
    namespace: NamespaceOpt = None,
    server: ServerOpt = None, token: TokenOpt = None, data_dir: DataDirOpt = None,
) -> None:
    """Set the replicas of a scalable object through its scale subresource."""
    with _client(ctx, server, token, data_dir) as client:
        rt, target = _single_target(client.registry, kind, name)
        if rt.scale is None:
            raise CliError(f"{rt.plural} cannot be scaled (no scale subresource)")
        client.scale(rt, target, _namespace_for(rt, namespace, False), replicas)
        typer.echo(f"{printers.resource_ref(rt, target)} scaled")


def _sorted_events(items: list[Obj]) -> list[Obj]:
    return sorted(items, key=lambda e: printers.event_time(e) or "")


@app.command()
@handle_errors
def events(
    ctx: typer.Context,
    namespace: NamespaceOpt = None,
    all_namespaces: AllNamespacesOpt = False,
    for_object: Annotated[str | None, typer.Option("--for", help="Only events of KIND/NAME.", show_default=False)]
    = None,
    watch: Annotated[bool, typer.Option("--watch", "-w", help="After listing, print new events.")] = False,
    server: ServerOpt = None, token: TokenOpt = None, data_dir: DataDirOpt = None,
) -> None:
    """List events, oldest first."""
    with _client(ctx, server, token, data_dir) as client:
        rt = client.registry.lookup("events")
        ns = _namespace_for(rt, namespace, all_namespaces)
        field_selector = ""
        if for_object:
            target_rt, target_name = _single_target(client.registry, for_object, None)
            field_selector = f"involvedObject.kind={target_rt.kind},involvedObject.name={target_name}"
        items, version = client.list_all(rt, ns, field_selector=field_selector)
        if items:
            _print_objects(rt, _sorted_events(items), "", all_namespaces=all_namespaces, show_kind=False)
        elif not watch:
            _echo_error("No events found." if ns is None else f"No events found in {ns} namespace.")
        if watch:
            _watch_and_print(client, rt, ns, version, "", field_selector, "", all_namespaces,
                             header_shown=bool(items))


# ---- discovery and version ----------------------------------------------------------------------

@app.command("api-resources")
@handle_errors
def api_resources(
    ctx: typer.Context,
    server: ServerOpt = None, token: TokenOpt = None, data_dir: DataDirOpt = None,
) -> None:
    """List the kinds the server serves."""
    with _client(ctx, server, token, data_dir) as client:
        rows = []
        for resource_list in client.api_resource_lists():
            for resource in resource_list.get("resources", []):
                if "/" in resource["name"]:
                    continue  # subresources are not listed, as with kubectl
                rows.append([resource["name"], ",".join(resource.get("shortNames") or []),
                             resource_list["groupVersion"], str(resource["namespaced"]).lower(), resource["kind"]])
        typer.echo(printers.render_table(["NAME", "SHORTNAMES", "APIVERSION", "NAMESPACED", "KIND"], rows), nl=False)


@app.command()
@handle_errors
def version(
    ctx: typer.Context,
    client_only: Annotated[bool, typer.Option("--client", help="Only the client version.")] = False,
    server: ServerOpt = None, token: TokenOpt = None, data_dir: DataDirOpt = None,
) -> None:
    """Print the client and server versions."""
    typer.echo(f"Client Version: v{__version__}")
    if client_only:
        return
    with _client(ctx, server, token, data_dir) as client:
        typer.echo(f"Server Version: {client.version().get('gitVersion', 'unknown')}")


app.add_typer(autoscaling_cli.app, name="scaledobject")


from capstan.cli.queue import queue_app  # noqa: E402 - registered after the commands it uses

app.add_typer(queue_app)


def run() -> None:
    app()


if __name__ == "__main__":
    run()

