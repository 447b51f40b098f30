"""A campaign as JUnit XML, for CI: one <testsuite> per scenario, one <testcase> per call and expectation.

A testcase is named `EXPECTATION` within classname `SCENARIO.call-R` (R the repeat, from 1); an unmet
expectation is a <failure> whose message is the evidence (the measured value against the bound). A
call that never settled is one <error> testcase. Pure: builds the text, writes nothing.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence

from orchestrator.scenario.summary import CallResult


def junit_xml(run: str, suites: Sequence[tuple[str, Sequence[CallResult]]]) -> str:
    """The XML document for (scenario name, its calls) pairs."""
    root = ET.Element("testsuites", name=f"orchestrator scenario --run {run}")
    totals = {"tests": 0, "failures": 0, "errors": 0}
    for name, results in suites:
        suite = ET.SubElement(root, "testsuite", name=name)
        counts = {"tests": 0, "failures": 0, "errors": 0}
        for r in results:
            classname = f"{name}.call-{r.repeat}"
            where = f"call {r.call_id or '-'} ({r.call_sid or 'no CallSid'}), state {r.state}"
            if r.error is not None:
                case = ET.SubElement(suite, "testcase", name="call settled", classname=classname)
                ET.SubElement(case, "error", message=r.error, type="CallError").text = where
                counts["tests"] += 1
                counts["errors"] += 1
                continue
            for o in r.outcomes:
                case = ET.SubElement(suite, "testcase", name=o.label, classname=classname)
                ET.SubElement(case, "system-out").text = f"{where}: {o.evidence}"
                counts["tests"] += 1
                if not o.met:
                    ET.SubElement(case, "failure", message=o.evidence, type="ExpectationNotMet").text = where
                    counts["failures"] += 1
        for key, value in counts.items():
            suite.set(key, str(value))
            totals[key] += value
        suite.set("skipped", "0")
    for key, value in totals.items():
        root.set(key, str(value))
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
