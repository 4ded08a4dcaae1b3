"""The release file: experiments, their two arms and the rollback rule, checked with file-and-line errors."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from kefu.config import LLMSettings, Settings
from kefu.datafiles import load_yaml_model, yaml_line
from kefu.errors import ConfigError, DataFileError
from kefu.prompts import PromptLibrary

ArmName = Literal["control", "canary"]
CONTROL: ArmName = "control"
CANARY: ArmName = "canary"
ARMS: tuple[ArmName, ...] = (CONTROL, CANARY)
RELEASE_FILE = "release.yaml"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ArmSpec(_Strict):
    """What one arm changes; an arm is the deployment's configuration plus these changes."""

    llm: dict[str, Any] | None = None
    """Changes to the deployment's LLM settings (any `llm.*` setting: backend, model, base_url, max_retries,
    roles, ...); unset ones inherit. `api_key_env` names the environment variable holding the endpoint's key:
    keys never live in data files, and an arm with its own `base_url` does not inherit the deployment's key."""
    prompt_version: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    flows_dir: Path | None = None
    """The flow files of this arm, relative to the release file's directory (the actions stay the shop's)."""

    @property
    def changes_anything(self) -> bool:
        return self.llm is not None or self.prompt_version is not None or self.flows_dir is not None


class RollbackRule(_Strict):
    """When the canary is rolled back: see docs/release.md for the formula."""

    enabled: bool = True
    window_s: float = Field(default=300.0, gt=0, le=7 * 86400)
    """The sliding window of canary turns judged (turns before the experiment's last change are not counted)."""
    min_turns: int = Field(default=20, ge=1)
    """No verdict on fewer canary turns than this in the window."""
    max_error_rate: float = Field(default=0.05, ge=0, le=1)
    """Share of canary turns that failed (the canary's model failed, or the customer got an error reply)."""
    max_handoff_rate: float | None = Field(default=None, ge=0, le=1)
    """Share of canary turns handed to a person; unset: not checked."""
    max_handoff_increase: float | None = Field(default=None, ge=0, le=1)
    """Canary handoff rate minus the control's over the same window (both need `min_turns`); unset: not checked."""


class ExperimentSpec(_Strict):
    """One gray release: the canary arm against the control arm, for `share` percent of new sessions."""

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,63}$")
    description: str = ""
    enabled: bool = True
    share: float = Field(ge=0, le=100)
    """Percent of new sessions assigned to the canary (steps of 0.01)."""
    control: ArmSpec = Field(default_factory=ArmSpec)
    canary: ArmSpec
    rollback: RollbackRule = Field(default_factory=RollbackRule)

    @model_validator(mode="after")
    def _canary_differs(self) -> ExperimentSpec:
        if not self.canary.changes_anything:
            raise ValueError("the canary changes nothing: give it an llm, a prompt_version or a flows_dir")
        if abs(self.share * 100 - round(self.share * 100)) > 1e-6:
            raise ValueError("share is a percentage with at most two decimals (e.g. 5 or 0.25)")
        return self


class ReleaseFile(_Strict):
    """The whole release file."""

    experiments: list[ExperimentSpec] = Field(default_factory=list)

    @model_validator(mode="after")
    def _one_running(self) -> ReleaseFile:
        ids = [e.id for e in self.experiments]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise ValueError(f"experiment ids must be unique; repeated: {', '.join(duplicates)}")
        enabled = [e.id for e in self.experiments if e.enabled]
        if len(enabled) > 1:
            raise ValueError(
                "at most one experiment may be enabled at a time (each session takes part in one); "
                f"enabled: {', '.join(enabled)}"
            )
        return self

    @property
    def active(self) -> ExperimentSpec | None:
        """The enabled experiment, if any: every session takes part in it."""
        return next((e for e in self.experiments if e.enabled), None)

    def get(self, experiment_id: str) -> ExperimentSpec | None:
        return next((e for e in self.experiments if e.id == experiment_id), None)


@dataclass(frozen=True, slots=True)
class ArmPlan:
    """One arm resolved against the deployment's settings: what to build for it at start-up."""

    name: ArmName
    llm: LLMSettings | None
    """The arm's LLM settings; None: the deployment's models."""
    prompt_version: str | None
    flows_dir: Path | None


def release_file_path(settings: Settings) -> Path | None:
    """The release file to load: `release.file`, else `<shop.dir>/release.yaml` when it exists."""
    if not settings.release.enabled:
        return None
    if settings.release.file is not None:
        return settings.release.file
    if settings.shop.dir is not None and (settings.shop.dir / RELEASE_FILE).is_file():
        return settings.shop.dir / RELEASE_FILE
    return None


def load_release_file(path: Path) -> ReleaseFile:
    return load_yaml_model(path, ReleaseFile)


def plan_arms(
    path: Path,
    release: ReleaseFile,
    experiment: ExperimentSpec,
    settings: Settings,
    *,
    env: Mapping[str, str] | None = None,
) -> dict[ArmName, ArmPlan]:
    """Resolve both arms of `experiment` (models, prompt version, flows dir); mistakes name the file and line."""
    index = release.experiments.index(experiment)
    environ = os.environ if env is None else env
    plans: dict[ArmName, ArmPlan] = {}
    for name in ARMS:
        arm: ArmSpec = getattr(experiment, name)
        where = ("experiments", index, name)
        llm = _arm_llm(path, where, arm.llm, settings.llm, environ) if arm.llm is not None else None
        if arm.prompt_version is not None:
            try:
                PromptLibrary(arm.prompt_version)
            except ConfigError as exc:
                raise DataFileError(str(path), yaml_line(path, (*where, "prompt_version")), str(exc)) from None
        flows_dir = None
        if arm.flows_dir is not None:
            flows_dir = arm.flows_dir if arm.flows_dir.is_absolute() else path.parent / arm.flows_dir
            if not flows_dir.is_dir():
                raise DataFileError(
                    str(path), yaml_line(path, (*where, "flows_dir")), f"{name}.flows_dir: no directory {flows_dir}"
                )
        plans[name] = ArmPlan(name, llm, arm.prompt_version, flows_dir)
    return plans


def _arm_llm(
    path: Path,
    where: tuple[str | int, ...],
    arm: dict[str, Any],
    base: LLMSettings,
    environ: Mapping[str, str],
) -> LLMSettings:
    name = where[-1]
    changes = dict(arm)
    if "api_key" in changes:
        raise DataFileError(
            str(path),
            yaml_line(path, (*where, "llm", "api_key")),
            f"{name}.llm.api_key: keys do not belong in data files; put it in an environment variable and name that "
            "variable in api_key_env",
        )
    key_env = changes.pop("api_key_env", None)
    data: dict[str, Any] = base.model_dump()
    if changes.get("base_url") not in (None, base.base_url):
        data["api_key"] = None  # the deployment's key is for its own endpoint
    if key_env is not None:
        key = environ.get(str(key_env))
        if not key:
            raise DataFileError(
                str(path),
                yaml_line(path, (*where, "llm", "api_key_env")),
                f"{name}.llm.api_key_env: the environment variable {key_env} is not set",
            )
        data["api_key"] = key
    roles = changes.pop("roles", None)
    data.update(changes)
    if roles is not None:
        data["roles"] = {**data["roles"], **roles} if isinstance(roles, dict) else roles
    try:
        return LLMSettings.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = tuple(err["loc"])
        field = ".".join(str(p) for p in loc)
        message = str(err["msg"]).split(": set KEFU_", 1)[0]  # the environment hint is for the deployment's settings
        line = yaml_line(path, (*where, "llm", *loc))
        raise DataFileError(str(path), line, f"{name}.llm{'.' + field if field else ''}: {message}") from None
