"""DP-GEN's LAMMPS template jobs: ``template: {lmp: file}`` with ``rev_mat`` / ``sys_rev_mat``.

Every combination of the ``rev_mat.lmp`` values (times those of ``sys_rev_mat[sys_idx].lmp``) is
one task per configuration. In the template, the committee's ``pair_style deepmd`` line and the
``dump dpgen_dump`` line are rewritten (our models, ``model_devi.out``, our trajectory file, every
``trj_freq`` steps), then each key is replaced by its value wherever it occurs, as DP-GEN does.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from dpgen_ng.errors import UserError
from dpgen_ng.explore.lammps import Deviation, dump_lines, pair_style

DUMP_NAME = "dpgen_dump"
UNSUPPORTED_TEMPLATE_KEYS = {"plm": "the LAMMPS build we ship has COLVARS but not PLUMED: use a "
                                    "fix colvars line in the lmp template (its files through "
                                    "user_forward_files)",
                             "plm_path": "PLUMED is not in the LAMMPS build we ship"}


@dataclass(frozen=True)
class Template:
    path: str
    text: str
    rev_mat: tuple[tuple[str, tuple[Any, ...]], ...]  # (key, values), in the file's order
    sys_rev_mat: Mapping[int, tuple[tuple[str, tuple[Any, ...]], ...]]

    def combinations(self, sys_idx: int) -> Iterator[dict[str, Any]]:
        """{key: value} of each task of one configuration of system ``sys_idx``."""
        pairs = self.rev_mat + self.sys_rev_mat.get(sys_idx, ())
        keys = [k for k, _ in pairs]
        for values in itertools.product(*(v for _, v in pairs)):
            yield dict(zip(keys, values))

    def as_json(self) -> dict[str, Any]:
        return {"template": {"lmp": self.path}, "rev_mat": {"lmp": {k: list(v) for k, v in self.rev_mat}},
                "sys_rev_mat": {str(i): {"lmp": {k: list(v) for k, v in m}}
                                for i, m in self.sys_rev_mat.items()}}


def _line_index(lines: Sequence[str], words: tuple[str, ...]) -> list[int]:
    return [i for i, ln in enumerate(lines)
            if not ln.lstrip().startswith("#") and tuple(ln.split()[:len(words)]) == words]


def check_template(text: str, where: str) -> None:
    """The lines a template must have for us to rewrite (one of each)."""
    for words, what in ((("pair_style", "deepmd"), "the committee's 'pair_style deepmd ...'"),
                        (("dump", DUMP_NAME), f"DP-GEN's trajectory line 'dump {DUMP_NAME} ...'")):
        found = _line_index(text.splitlines(), words)
        if len(found) != 1:
            raise UserError(f"{len(found)} '{' '.join(words)}' lines in the template", where,
                            f"exactly one line with {what} (we rewrite it)")


def render(template: Template, values: Mapping[str, Any], graphs: tuple[str, ...], trj_freq: int,
           deviation: Deviation) -> str:
    """The input.lammps of one task."""
    lines = template.text.splitlines()
    (i,) = _line_index(lines, ("pair_style", "deepmd"))
    lines[i] = pair_style(graphs, trj_freq, deviation)
    (j,) = _line_index(lines, ("dump", DUMP_NAME))
    lines[j:j + 1] = dump_lines(DUMP_NAME, trj_freq)
    text = "\n".join(lines) + "\n"
    for key, value in values.items():
        text = text.replace(key, str(value))
    return text
