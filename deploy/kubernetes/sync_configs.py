"""Copy deploy/configs/*.toml (and deploy/compose/rxd-llm.toml) into the ConfigMaps of the manifests here."""

from __future__ import annotations

import re
import sys
from pathlib import Path

DEPLOY = Path(__file__).resolve().parents[1]
SOURCES = {
    "rxd.toml": DEPLOY / "configs" / "rxd.toml",
    "txd.toml": DEPLOY / "configs" / "txd.toml",
    "rxd-llm.toml": DEPLOY / "compose" / "rxd-llm.toml",
}
# A ConfigMap entry as written here: two-space key, block scalar, body indented by four spaces.
ENTRY = re.compile(r"^  ([\w.-]+\.toml): \|\n((?:    .*\n|\n)*)", re.M)


def synced(text: str) -> str:
    def body(match: re.Match[str]) -> str:
        if match.group(1) not in SOURCES:  # a TOML entry of a Secret, not a config
            return match.group(0)
        source = SOURCES[match.group(1)].read_text()
        lines = [f"    {line}" if line else "" for line in source.splitlines()]
        return f"  {match.group(1)}: |\n" + "\n".join(lines) + "\n"

    return ENTRY.sub(body, text)


def main() -> int:
    for manifest in sorted(Path(__file__).parent.rglob("*.yaml")):
        text = manifest.read_text()
        if synced(text) != text:
            manifest.write_text(synced(text))
            print(f"updated {manifest.relative_to(DEPLOY.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
