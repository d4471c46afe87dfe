"""The training recipe on a command line: each :class:`~openaff.engine.recipe.Recipe` field
becomes an option with its declared type, default, help and check, under the flag name and
default a task (training script) gives it."""
from __future__ import annotations

import argparse
from dataclasses import dataclass, field, fields

from ..engine.recipe import Recipe

__all__ = ['RecipeOptions']


def _typed(kind, check, name):
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f'not a {kind.__name__}: {text!r}') from None
        problem = check(value) if check else None
        if problem:
            raise argparse.ArgumentTypeError(problem)
        return value
    parse.__name__ = name  # what argparse calls the type in its messages
    return parse


@dataclass(frozen=True)
class RecipeOptions:
    """How one task (a training script) exposes the recipe on its command line: its own
    ``defaults``, original ``flags`` and ``helps`` (field name -> value), and the fields it
    leaves out (``exclude``) or derives itself."""
    defaults: dict = field(default_factory=dict)
    flags: dict = field(default_factory=dict)
    helps: dict = field(default_factory=dict)
    exclude: tuple = ()

    def flag(self, name):
        return self.flags.get(name, '--' + name.replace('_', '-'))

    def dest(self, name):
        return self.flag(name).lstrip('-').replace('-', '_')

    def exposed(self):
        return [spec for spec in fields(Recipe)
                if spec.metadata['flag'] and spec.name not in self.exclude]

    def add_to(self, parser):
        """Add the recipe's options to ``parser``, with the declared types, validation and
        help, and this task's defaults and flag names."""
        for spec in self.exposed():
            meta, flag = spec.metadata, self.flag(spec.name)
            text = self.helps.get(spec.name, meta['help'])
            if isinstance(spec.default, bool):
                parser.add_argument(flag, dest=self.dest(spec.name), action='store_true',
                                    help=text)
                continue
            kind = type(spec.default)
            parser.add_argument(flag, dest=self.dest(spec.name),
                                default=self.defaults.get(spec.name, spec.default), help=text,
                                choices=meta['choices'], metavar=meta['metavar'],
                                type=_typed(kind, meta['check'], kind.__name__))

    def recipe(self, opt, **derived):
        """The :class:`Recipe` of parsed options ``opt``, with the ``derived`` fields the task
        computes itself; ``ValueError`` for a refused value."""
        values = {spec.name: getattr(opt, self.dest(spec.name)) for spec in self.exposed()}
        values.update(derived)
        return Recipe(**values)
