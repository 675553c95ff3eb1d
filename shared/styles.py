"""Style presets: named looks a person can ask for ("DRAW watercolor: a fox", or a reply
"watercolor" to their last picture). They live in a small JSON file (shared/styles.json, or the
operator's own at STYLES_FILE) mapping a lowercase name to a look that finishes "as …".
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from .catalogue import fold, style_aliases
from .errors import ConfigError

DEFAULT_STYLES_FILE = Path(__file__).with_name("styles.json")
# The presets' names in each language (shared/languages/*.toml [styles]).
STYLE_ALIASES = style_aliases()
MAX_STYLES = 20
MAX_LOOK_CHARS = 200
_NAME = re.compile(r"[a-z][a-z0-9-]{0,19}")


@dataclass(frozen=True)
class Style:
    name: str
    look: str  # "a soft watercolor painting", as in "as a soft watercolor painting"

    def draw_prompt(self, prompt: str) -> str:
        """The prompt for a new picture of `prompt` in this style."""
        return f"{prompt}, as {self.look}"

    def edit_instruction(self) -> str:
        """The instruction that restyles a picture someone already has."""
        return f"Redraw this picture as {self.look}, keeping its subject and composition."


@dataclass(frozen=True)
class StyleBook:
    styles: tuple[Style, ...] = ()

    def find(self, name: str) -> Style | None:
        """The style called `name`, in its own name or a language's ("acuarela", any case
        or accents)."""
        wanted = name.strip().lower()
        wanted = STYLE_ALIASES.get(fold(wanted), wanted)
        return next((style for style in self.styles if style.name == wanted), None)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(style.name for style in self.styles)


def load_styles(path: Path = DEFAULT_STYLES_FILE) -> StyleBook:
    """The presets in `path`, or `ConfigError` saying what is wrong with the file."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"STYLES_FILE {path} cannot be read as JSON") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"STYLES_FILE {path} must hold one JSON object")
    styles = []
    for name, look in data.items():
        if name.startswith("_"):  # comments
            continue
        if not _NAME.fullmatch(name):
            raise ConfigError(f"style name {name!r}: use lowercase letters, digits and -")
        if not isinstance(look, str) or not look.strip() or len(look) > MAX_LOOK_CHARS:
            raise ConfigError(f"style {name!r}: the look must be text of 1-{MAX_LOOK_CHARS} chars")
        styles.append(Style(name, " ".join(look.split())))
    if len(styles) > MAX_STYLES:
        raise ConfigError(f"STYLES_FILE {path} has {len(styles)} styles; at most {MAX_STYLES}")
    return StyleBook(tuple(styles))


# The presets that ship with the code (a small file in this package, read once).
DEFAULT_STYLES = load_styles()
