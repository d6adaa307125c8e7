"""docs/ describes the code: keys, routes, status codes, health states and payloads.

The examples of docs/payloads.md are rendered with the server's own
renderers and compared, so a change to what is sent shows up here until the
page says it too.  Only stable names are imported: the key lists, the request
parser, the configuration record and the renderer classes, found in the
modules of ``sylkpush.applications`` by the names custom families use too.
"""

from __future__ import annotations

import ast
import importlib
import json
import os
import pkgutil
import re
from typing import Dict, Iterator, List, Set, Tuple

from twisted.trial import unittest

import sylkpush
import sylkpush.applications
from sylkpush.config import AppConfig
from sylkpush.config_keys import APPLICATION_KEYS, GENERAL_KEYS
from sylkpush.notification import EVENTS, ValidationError, parse_notification

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.dirname(os.path.abspath(sylkpush.__file__))
PLATFORMS = ("apple", "firebase")
#: the time the examples of docs/payloads.md are rendered at (2026-01-01 00:00:00 UTC)
EXAMPLE_TIME = 1767225600


def read(*path: str) -> str:
    with open(os.path.join(ROOT, *path), encoding="utf-8") as stream:
        return stream.read()


def sections(text: str, level: int) -> Dict[str, str]:
    """The text under each heading of ``level`` (``#`` count), by heading."""
    marker = "#" * level + " "
    found: Dict[str, str] = {}
    title = None
    for line in text.splitlines():
        if line.startswith(marker):
            title = line[len(marker):].strip()
            found[title] = ""
        elif title is not None:
            if re.match(r"#{1,%d} " % level, line):
                title = None
            else:
                found[title] += line + "\n"
    return found


def table_keys(text: str) -> Set[str]:
    """The backquoted names in the first column of the Markdown tables of ``text``."""
    keys = set()
    for line in text.splitlines():
        if line.startswith("| `"):
            keys.update(re.findall(r"`([^`]+)`", line.split("|")[1]))
    return keys


def families() -> Iterator[Tuple[str, object]]:
    """(app_type, module) of each built-in family: a module of
    sylkpush.applications that defines the renderer classes of a type."""
    for info in pkgutil.iter_modules(sylkpush.applications.__path__):
        module = importlib.import_module(f"sylkpush.applications.{info.name}")
        if any(hasattr(module, f"{p.capitalize()}{info.name.capitalize()}Payload") for p in PLATFORMS):
            yield info.name, module


def render(app_type: str, platform: str, body: dict, legacy: bool) -> Tuple[dict, dict]:
    module = importlib.import_module(f"sylkpush.applications.{app_type}")
    prefix = platform.capitalize() + app_type.capitalize()
    app = AppConfig(section="docs", app_id=body["app-id"], app_type=app_type, platform=platform,
                    firebase_authorization_key="legacy-key" if legacy else "")
    notification = parse_notification(body, app_type, platform)
    headers = getattr(module, prefix + "Headers")(notification, app, EXAMPLE_TIME).headers
    payload = getattr(module, prefix + "Payload")(notification, app, EXAMPLE_TIME).payload
    return headers, payload


def source_trees() -> Iterator[Tuple[str, ast.AST]]:
    """(path, syntax tree) of every module of the server (the fakes left out)."""
    for directory, _, files in os.walk(PACKAGE):
        if os.path.basename(directory) == "testing":
            continue
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(directory, name)
                with open(path, encoding="utf-8") as stream:
                    yield path, ast.parse(stream.read())


class ConfigurationDocTests(unittest.TestCase):

    def setUp(self):
        self.text = read("docs", "configuration.md")

    def test_every_general_ini_key_is_documented_in_its_section(self):
        documented = sections(self.text, 3)
        for section, keys in GENERAL_KEYS.items():
            self.assertIn(f"[{section}]", documented, f"no section for [{section}]")
            self.assertEqual(table_keys(documented[f"[{section}]"]), set(keys), f"[{section}]")
        self.assertEqual({title for title in documented if title.startswith("[")},
                         {f"[{section}]" for section in GENERAL_KEYS})

    def test_every_applications_ini_key_is_documented(self):
        self.assertEqual(table_keys(sections(self.text, 2)["applications.ini"]), set(APPLICATION_KEYS))


class ApiDocTests(unittest.TestCase):

    def setUp(self):
        self.text = read("docs", "api.md")
        with open(os.path.join(ROOT, "resources", "openapi.json"), encoding="utf-8") as stream:
            self.openapi = json.load(stream)

    def routes(self) -> Set[Tuple[str, str]]:
        return {(method.upper(), path) for path, methods in self.openapi["paths"].items()
                for method in methods if method != "parameters"}

    def test_every_route_is_documented(self):
        documented = set(re.findall(r"^\| `([A-Z]+)` \| `([^`]+)` \|", self.text, re.M))
        self.assertEqual(documented, self.routes())

    def documented_codes(self) -> Set[int]:
        table = sections(self.text, 2)["Status codes"]
        return {int(code) for code in re.findall(r"^\| (\d{3}) \|", table, re.M)}

    def test_every_code_of_the_api_description_is_documented(self):
        described = {int(code) for methods in self.openapi["paths"].values()
                     for operation in methods.values() if isinstance(operation, dict)
                     for code in operation.get("responses", {})}
        self.assertEqual(described - self.documented_codes(), set())

    def test_every_code_the_server_answers_is_documented(self):
        """The literal codes of every answer, refusal and push result in the code."""
        calls = {"ApiError": 0, "Answer": 0, "PushResult": 0, "answer_bytes": 0, "write_json": 1, "_refuse": 1}
        answered: Dict[int, str] = {}
        for path, tree in source_trees():
            for node in ast.walk(tree):
                if not isinstance(node, ast.Call):
                    continue
                name = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
                index = calls.get(name)
                if index is not None and len(node.args) > index:
                    argument = node.args[index]
                    if isinstance(argument, ast.Constant) and isinstance(argument.value, int):
                        answered[argument.value] = os.path.relpath(path, ROOT)
        self.assertGreater(len(answered), 10)  # the scan sees the answers
        missing = {code: path for code, path in answered.items() if code not in self.documented_codes()}
        self.assertEqual(missing, {})

    def test_every_application_state_is_documented(self):
        """The states the clients and /health report, found in their status methods."""
        states = set()
        for path, tree in source_trees():
            if os.sep + "tokens" + os.sep in path:
                continue
            for function in ast.walk(tree):
                if isinstance(function, ast.FunctionDef) and function.name.endswith("status"):
                    states |= _state_constants(function)
        self.assertGreater(len(states), 8)
        table = sections(self.text, 2)["`GET /health`"]
        documented = {state for line in table.splitlines() if line.startswith("| `")
                      for state in re.findall(r"`([^`]+)`", line.split("|")[1])}
        self.assertEqual(states - documented, set())
        from sylkpush.health import UP_STATES
        up = {state for line in table.splitlines() if re.match(r"\| `.*\| yes \|", line)
              for state in re.findall(r"`([^`]+)`", line.split("|")[1])}
        self.assertEqual(up, set(UP_STATES))

    def test_the_readme_names_every_state(self):
        table = sections(self.text, 2)["`GET /health`"]
        states = {state for line in table.splitlines() if re.match(r"\| `.*\| (yes|no) \|", line)
                  for state in re.findall(r"`([^`]+)`", line.split("|")[1])}
        readme = read("README.md")
        self.assertEqual({state for state in states if f"`{state}`" not in readme}, set())

    def test_the_answer_examples_are_envelopes(self):
        examples = [json.loads(block) for block in re.findall(r"```json\n(.*?)```", self.text, re.S)]
        self.assertGreater(len(examples), 2)
        result = set(self.openapi["components"]["schemas"]["PushResult"]["properties"])
        for example in examples:
            self.assertEqual(set(example), {"code", "description", "data"})
            if "call_id" in example["data"]:
                self.assertEqual(set(example["data"]), result)

    def test_the_error_example_is_the_validator_s(self):
        example = json.loads(re.search(r"```json\n(.*?)```", self.text, re.S).group(1))
        body = {"app-id": "a", "platform": "apple", "token": "t", "call-id": "c", "from": "f", "to": "t",
                "event": "incoming_session", "media-type": "fax"}
        with self.assertRaises(ValidationError) as raised:
            parse_notification(body, "sylk")
        self.assertEqual((example["description"], example["data"]),
                         (str(raised.exception), {"field": raised.exception.field}))

    def test_every_request_field_is_documented(self):
        fields = self.openapi["paths"]["/push"]["post"]["requestBody"]["content"]["application/json"]["schema"]
        table = sections(self.text, 2)["`POST /push`"]
        documented = table_keys(table) | {"from_display_name"}
        self.assertEqual(set(fields["properties"]) - documented, set())


def _state_constants(function: ast.AST) -> Set[str]:
    """String constants given to ``state`` (a variable, a dict key, a keyword) in ``function``."""
    found: Set[str] = set()

    def constants(node: ast.AST) -> List[str]:
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return [node.value]
        if isinstance(node, ast.IfExp):
            return constants(node.body) + constants(node.orelse)
        return []
    for node in ast.walk(function):
        if isinstance(node, ast.Assign):
            for target in node.targets:
                if (isinstance(target, ast.Name) and target.id == "state") or (
                        isinstance(target, ast.Subscript) and isinstance(target.slice, ast.Constant)
                        and target.slice.value == "state"):
                    found.update(constants(node.value))
        elif isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values):
                if isinstance(key, ast.Constant) and key.value == "state":
                    found.update(constants(value))
        elif isinstance(node, ast.Call):
            found.update(c for keyword in node.keywords if keyword.arg == "state" for c in constants(keyword.value))
    return found


EXAMPLE = re.compile(r"^(\w+) / (\w+) / (\w+)( \((.*)\))?$")


class PayloadDocTests(unittest.TestCase):

    def setUp(self):
        self.examples = {title: text for title, text in sections(read("docs", "payloads.md"), 4).items()
                         if EXAMPLE.match(title)}

    def blocks(self, text: str) -> Dict[str, object]:
        return {kind: json.loads(body) for kind, body in re.findall(r"```json (\w+)\n(.*?)```", text, re.S)}

    def test_the_examples_are_what_the_renderers_send(self):
        self.assertGreater(len(self.examples), 10)
        for title, text in self.examples.items():
            app_type, platform, event, _, variant = EXAMPLE.match(title).groups()
            blocks = self.blocks(text)
            request = blocks["request"]
            self.assertEqual((request["platform"], request.get("event", "incoming_session")), (platform, event),
                             title)
            headers, payload = render(app_type, platform, request, legacy=variant == "legacy API")
            self.assertEqual(blocks.get("headers", {}), headers, title)
            self.assertEqual(blocks["payload"], payload, title)

    def test_every_family_platform_and_event_has_an_example(self):
        shown = {EXAMPLE.match(title).groups()[:3] for title in self.examples}
        expected = set()
        for app_type, module in families():
            for platform in PLATFORMS:
                for event in EVENTS:
                    body = {"app-id": "a", "platform": platform, "token": "t", "call-id": "c", "from": "f",
                            "to": "t", "event": event, "media-type": "audio"}
                    try:
                        render(app_type, platform, body, legacy=False)
                    except (ValidationError, ValueError):
                        continue  # the family does not take this event
                    expected.add((app_type, platform, event))
        self.assertIn(("linphone", "apple", "incoming_session"), expected)
        self.assertEqual(expected - shown, set())
        self.assertEqual(shown - expected, set())


class ReadmeTests(unittest.TestCase):

    def test_the_project_documents_itself(self):
        for name in ("README.md", "docs/api.md", "docs/payloads.md", "docs/configuration.md"):
            self.assertIsNone(re.search(r"SPEC|shared/", read(name)), f"{name} cites the SPEC")

    def test_readme_links_the_reference(self):
        readme = read("README.md")
        for name in ("docs/api.md", "docs/payloads.md", "docs/configuration.md"):
            self.assertTrue(f"]({name}" in readme, f"README does not link {name}")
