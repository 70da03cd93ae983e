"""What validating one incoming batch found (`BatchResult`): its verdict, the reasons, every
failed expectation, drift and anomaly figures, as the CLI's summary, report.md and report.json."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from keel.validation.checks import Failure

ACCEPTED, ACCEPTED_WITH_QUARANTINE, ACCEPTED_WITH_WARNINGS, REJECTED = (
    "accepted", "accepted with quarantine", "accepted with warnings", "rejected")


@dataclass
class BatchResult:
    """What validating one incoming batch found, and where its outputs are."""

    dataset: str
    input: str
    input_sha256: str
    suite: str
    rows: int
    labelled: bool
    verdict: str
    reasons: list[str]
    quarantined_rows: int
    clean_rows: int
    problems: int
    failures: list[Failure]
    drift: list[dict]
    anomaly: dict
    seconds: dict
    report_dir: str
    unparsed_lines: list[dict] = field(default_factory=list)
    files: dict = field(default_factory=dict)
    # Texts: what drives a drift (the classes whose shares moved most, the words most over-represented).
    drift_drivers: dict = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        """0: nothing wrong; 1: data problems found (quarantined rows, failed checks, rejection)."""
        return 0 if self.problems == 0 else 1

    @property
    def accepted(self) -> bool:
        return self.verdict != REJECTED

    def summary(self) -> str:
        lines = [f"{self.dataset}: {Path(self.input).name} ({self.rows} rows{'' if self.labelled else ', unlabelled'}) "
                 f"{self.verdict.upper()}"]
        lines += [f"  rejected because {r}" for r in self.reasons]
        if self.quarantined_rows:
            lines.append(f"  {self.quarantined_rows} rows quarantined, {self.clean_rows} clean")
        for failure in self.failures:
            lines.append(f"- [{failure.on_failure}] {failure.sentence()}")
            for example in failure.examples[:3]:
                lines.append("    e.g. " + ", ".join(f"{k}={v}" for k, v in example.items()))
        if self.unparsed_lines:
            lines.append(f"- [quarantine] {self._unparsed()}")
        drifted = [d for d in self.drift if d["drifted"]]
        for d in drifted:
            lines.append(f"- drift in {d['check']}: {d['statistic']} {d['value']:.3f} > {d['threshold']:g} (p={d['p_value']:.2g})"
                         + (f"; driven by {d['drivers']}" if d.get("drivers") else ""))
        if self.anomaly.get("flagged"):
            lines.append(f"- {self.anomaly['flagged']} images score above the anomaly threshold {self.anomaly['threshold']:.4g}")
        lines.append(f"report  {self.report_dir} (Data Docs: {self.files.get('docs_index', '-')})")
        lines.append(f"checked in {self.seconds.get('checks', 0):.2f} s")
        return "\n".join(lines)

    def markdown(self) -> str:
        out = [f"# {self.dataset}: batch {self.verdict}", "",
               f"`{self.input}` (sha256 `{self.input_sha256[:16]}`), {self.rows} rows, "
               f"{'labelled' if self.labelled else 'unlabelled'}; suite `{self.suite}`.", ""]
        if self.reasons:
            out += ["**Rejected because**", ""] + [f"- {r}" for r in self.reasons] + [""]
        out.append(f"{self.quarantined_rows} rows quarantined, {self.clean_rows} clean; "
                   f"checks took {self.seconds.get('checks', 0):.2f} s.")
        if self.unparsed_lines:
            out += ["", f"- {self._unparsed()}"]
        if self.failures:
            out += ["", "| expectation | on failure | column | failing | examples |", "|---|---|---|---|---|"]
            for f in self.failures:
                examples = "<br>".join(", ".join(f"{k}={v}" for k, v in e.items()) for e in f.examples[:3])
                count = "" if f.unexpected_count is None else f"{f.unexpected_count} ({f.unexpected_percent:.2f} %)"
                rule = f.rule + (f" (observed {f.observed})" if f.observed else "")
                out.append(f"| {rule} | {f.on_failure} | {f.column or ''} | {count} | {examples} |")
        if self.drift:
            out += ["", "**Drift against the reference**", "", "| check | statistic | value | threshold | p-value | drifted |",
                    "|---|---|---|---|---|---|"]
            for d in self.drift:
                out.append(f"| {d['check']} | {d['statistic']} | {d['value']:.4f} | {d['threshold']:g} | {d['p_value']:.3g} | "
                           f"{'**yes**' if d['drifted'] else 'no'} |")
            drivers = [f"- {d['check']}: driven by {d['drivers']}" for d in self.drift if d.get("drivers")]
            out += [""] + drivers if drivers else []
        if self.anomaly:
            out += ["", f"Anomaly scores: threshold {self.anomaly['threshold']:.4g}, {self.anomaly['flagged']} flagged, "
                        f"highest {self.anomaly['max']:.4g}."]
        return "\n".join(out)

    def _unparsed(self) -> str:
        first = self.unparsed_lines[0]
        return (f"{len(self.unparsed_lines)} lines could not be read: every line needs {first['expected']} fields "
                f"(e.g. line {first.get('line', '?')} has {first['fields']})")

    def to_dict(self) -> dict:
        return asdict(self)


def batches_summary(folder: str, results: list[dict]) -> dict:
    """One result for the validation of a landing folder's new files (exit code: the worst)."""
    lines = [f"{folder}: {len(results)} new file(s) validated" if results else f"{folder}: no new files to validate"]
    lines += [r["text"] for r in results]
    return {"input_path": folder, "batches": results, "text": "\n\n".join(lines),
            "exit_code": max((r["exit_code"] for r in results), default=0),
            "accepted": all(r["accepted"] for r in results)}
