"""Typed experiment configuration: the schema (dataclasses) and its YAML loading.

A config file is YAML whose sections map one to one onto the dataclasses of
:mod:`detkd.config.schema`. ``_base_: other.yaml`` (or a list of files; paths relative to the file
that names them) builds on other configs: the bases are merged in order, then the file itself,
mappings merged key by key, everything else (lists included) replaced
(:mod:`detkd.config.layers`). ``key.sub=value`` overrides from the command line win over both;
their values are YAML (``train.lr=0.01``, ``data.classes=[a,b]``, ``model.weights=null``). Unknown
keys are errors naming the key, the file and the closest valid key; wrong types and values
outside a key's choices are errors naming the key, the file, what was expected and what was found
(:mod:`detkd.config.load`).

Paths inside a config (``data.root``, ``model.checkpoint``, ...) are used as written: a relative
path is relative to the current working directory (the repository root, where ``detkd`` runs),
the same on the command line, in a config file and in the resolved ``config.yaml`` of a run
(:mod:`detkd.config.save`). A config file that is not found there (the one given, a ``_base_``
file, ``teacher.config``) is looked up by name among detkd's own configs, installed with the
package (:mod:`detkd.config.files`): ``synth/teacher.yaml`` or ``configs/synth/teacher.yaml``
from any folder, ``_base_: _base_/distill_recipe.yaml`` from a config written anywhere.

The schema is generic: adding a section is adding a dataclass field to :class:`Config`; the
loader, the saver and ``docs/CONFIG.md`` (``tools/config_reference.py``) follow the type hints
and each field's ``help`` / ``choices`` metadata (:mod:`detkd.config.fields`).

The package's modules: ``schema`` (the dataclasses and their choice lists), ``fields`` (reading
the schema's type hints and metadata), ``files`` (detkd's packaged configs), ``layers`` (YAML
files and their bases), ``load`` (overrides, conversion, checks) and ``save`` (plain data and
YAML). Every public name is importable from ``detkd.config`` itself.
"""

from __future__ import annotations

from detkd.config.fields import all_keys, type_name
from detkd.config.layers import BASE_KEY, DuplicateKeyError, UniqueKeyLoader
from detkd.config.load import (
    COMMAND_LINE,
    config_from_dict,
    is_distill_config,
    load_any_config,
    load_config,
    model_section_from_dict,
    saved_run_config,
    schema_for,
)
from detkd.config.presets import PRESETS, resolve_model_config
from detkd.config.save import config_to_dict, config_to_yaml, dump_yaml, save_config
from detkd.config.schema import (
    AT_LEAST_1, BACKBONES, CLS_LOSSES, CLS_MODES, DISTILL_SECTIONS, FEATURE_FAMILIES, FORMATS, HINT_LOSSES, HINT_MASKS,
    LEVEL_WEIGHTINGS, NON_NEGATIVE, NORMS, OPTIMIZERS, POSITIVE, SCHEDULES, STUDENT_INITS, UNIT, UNIT_OPEN_LOW,
    AugmentSection, ClsTermSection, Config, DataSection, DistillConfig, DistillSection, HintSection, ModelSection,
    Range, RegTermSection, RoISection, RPNSection, StudentSection, SynthSection, TeacherSection, TrainSection,
    UnlabeledSection, iou_order, opt, section,
)

__all__ = [
    "PRESETS", "resolve_model_config", "model_section_from_dict",
    "AT_LEAST_1", "BACKBONES", "BASE_KEY", "CLS_LOSSES", "CLS_MODES", "COMMAND_LINE", "DISTILL_SECTIONS",
    "FEATURE_FAMILIES", "FORMATS", "HINT_LOSSES", "HINT_MASKS", "LEVEL_WEIGHTINGS", "NON_NEGATIVE", "NORMS",
    "OPTIMIZERS", "POSITIVE", "SCHEDULES", "STUDENT_INITS", "UNIT", "UNIT_OPEN_LOW",
    "AugmentSection", "ClsTermSection", "Config", "DataSection", "DistillConfig", "DistillSection",
    "DuplicateKeyError", "HintSection", "ModelSection", "Range", "RegTermSection", "RoISection", "RPNSection",
    "StudentSection", "SynthSection", "TeacherSection", "TrainSection", "UniqueKeyLoader", "UnlabeledSection",
    "all_keys", "config_from_dict", "config_to_dict", "config_to_yaml", "dump_yaml", "iou_order",
    "is_distill_config", "load_any_config", "load_config", "opt", "save_config", "saved_run_config", "schema_for",
    "section", "type_name",
]
