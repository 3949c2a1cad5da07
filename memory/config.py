"""The `[memory]` section of the configuration: it lives beside the lessons it configures (runtime/config.py
puts it into `Config`)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class MemoryConfig(BaseModel):
    """What agents learn outside the model: lessons recalled at task start, reflection after every run."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)  # as every section of Config

    recall: bool = Field(default=True, description="put the most relevant lessons into the task at start")
    recall_tokens: int = Field(default=800, ge=0, description="token budget of the recalled-lessons section")
    recall_count: int = Field(default=10, ge=1, le=100, description="at most this many lessons recalled")
    placebo: bool = Field(default=False, description="eval arm: a neutral section of the same length instead")
    reflect: bool = Field(default=True, description="one model call after every run writes lesson deltas")
    max_lessons: int = Field(default=500, ge=10, description="over this, the lowest-scoring lessons retire")
    max_retire_per_reflection: int = Field(default=3, ge=0, description="a reflection retiring more is ignored")
    merge_similarity: float = Field(default=0.75, gt=0, le=1, description="word overlap at which lessons merge")
    global_lessons: bool = Field(default=True, description="also use the user's global store (~/.loopwright)")
    learned_skills: bool = Field(default=True, description="reflection may draft skills after repeated success")
    auto_promote: bool = Field(default=False, description="enable drafted skills at once (else skills promote)")
