"""The manual pages in man/ document exactly the options the programs accept."""

from __future__ import annotations

import argparse
import importlib.machinery
import importlib.util
import os
import re

from twisted.trial import unittest

from sylkpush import __version__
from sylkpush.cli import argument_parser

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def script_parser(name: str) -> argparse.ArgumentParser:
    path = os.path.join(ROOT, "scripts", name)
    loader = importlib.machinery.SourceFileLoader(name.replace("-", "_") + "_script", path)
    spec = importlib.util.spec_from_loader(loader.name, loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module.argument_parser()


def every_help(parser: argparse.ArgumentParser) -> str:
    """The help of ``parser`` and of each of its sub-commands."""
    texts = [parser.format_help()]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            texts.extend(every_help(sub) for sub in action.choices.values())
    return "\n".join(texts)


def long_options(text: str) -> set:
    return set(re.findall(r"(?<![\w-])--[a-z][a-z_-]*", text))


class ManualPageTests(unittest.TestCase):

    def check(self, page: str, parser: argparse.ArgumentParser) -> None:
        with open(os.path.join(ROOT, "man", page), encoding="utf-8") as stream:
            roff = stream.read()
        options = roff.split("\n.SH OPTIONS\n", 1)[1].split("\n.SH ", 1)[0]
        documented = long_options(options.replace("\\-", "-"))
        self.assertEqual(documented, long_options(every_help(parser)), page)
        self.assertIn(f'"sylk-pushserver {__version__}"', roff.splitlines()[0], page)

    def test_sylk_pushserver(self):
        self.check("sylk-pushserver.1", argument_parser())

    def test_sylk_pushclient(self):
        self.check("sylk-pushclient.1", script_parser("sylk-pushclient"))

    def test_sylk_pushclient_v2(self):
        self.check("sylk-pushclient-v2.1", script_parser("sylk-pushclient-v2"))
