"""benchmarks/router/REPORT.md: sections, each rewritten only by the script that measures it
(the optimization section is written by hand), and, as the file's last line, the benchmark's
`router vs nginx: ...` line again: the issue asks for it there, below every section."""

from __future__ import annotations

import re

from harness import HERE

REPORT = HERE / "REPORT.md"
ORDER = ("benchmark", "benchmark_1_workers", "autoscale", "routing_latency", "inprocess", "profile", "optimization")
SUMMARY = re.compile(r"^router vs nginx: .*$", re.M)


def write_section(name: str, lines: list[str]) -> None:
    sections: dict[str, str] = {}
    if REPORT.exists():
        for m in re.finditer(r"<!-- section:(\w+) -->\n(.*?)<!-- /section:\1 -->\n", REPORT.read_text(), re.S):
            sections[m.group(1)] = m.group(2)
    sections[name] = "\n".join(lines).rstrip("\n") + "\n"
    names = [n for n in ORDER if n in sections] + [n for n in sections if n not in ORDER]
    text = "\n".join(f"<!-- section:{n} -->\n{sections[n]}<!-- /section:{n} -->\n" for n in names)
    summary = SUMMARY.findall(sections.get("benchmark", ""))
    if summary:
        text += "\n" + summary[-1] + "\n"
    REPORT.write_text(text)
