"""Writes the image's SBOM (/app/sbom.json): its Python distributions and Debian packages.

Run at build time by the image's Python (`python sbom.py --image NAME OUT`). Our own JSON, not
CycloneDX: no CycloneDX generator is installed offline here. Format "catalytic-sbom/1":
{"format", "image", "git_sha", "python": [{"name", "version", "license"}],
 "debian": [{"name", "version", "architecture"}]}, each list sorted by name.
"""

from __future__ import annotations

import argparse
import json
import sys
from importlib import metadata
from pathlib import Path

DPKG_STATUS = Path("/var/lib/dpkg/status")


def python_packages() -> list[dict[str, str]]:
    found = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if not name:
            continue
        licence = next(
            (
                value
                for field in ("License-Expression", "License")
                for value in dist.metadata.get_all(field, [])
                if value
            ),
            "",
        )
        found[name.lower()] = {
            "name": name,
            "version": dist.version,
            "license": licence.splitlines()[0] if licence else "",
        }
    return [found[key] for key in sorted(found)]


def debian_packages(status: Path = DPKG_STATUS) -> list[dict[str, str]]:
    packages = []
    for stanza in status.read_text(encoding="utf-8").split("\n\n"):
        fields = {}
        for line in stanza.splitlines():
            if line[:1] not in (" ", "\t") and ":" in line:
                key, _, value = line.partition(":")
                fields[key] = value.strip()
        if fields.get("Package") and fields.get("Status", "").endswith(" installed"):
            packages.append(
                {
                    "name": fields["Package"],
                    "version": fields.get("Version", ""),
                    "architecture": fields.get("Architecture", ""),
                }
            )
    return sorted(packages, key=lambda p: p["name"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--image", required=True)
    parser.add_argument("--git-sha", default="unknown")
    parser.add_argument("out", type=Path)
    args = parser.parse_args(argv)
    sbom = {
        "format": "catalytic-sbom/1",
        "image": args.image,
        "git_sha": args.git_sha,
        "python": python_packages(),
        "debian": debian_packages(),
    }
    args.out.write_text(json.dumps(sbom, indent=1) + "\n", encoding="utf-8")
    print(
        f"sbom: {len(sbom['python'])} Python, {len(sbom['debian'])} Debian packages",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
