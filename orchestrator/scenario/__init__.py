"""Test campaigns: scenario files (a scripted caller, a line, a backend, expectations), played on the
local rig N times, judged per call, summarised with statistics, written as JSON and JUnit XML.

    parse.py (+ nodes, parse_steps, parse_expect)   a YAML file -> Scenario, errors naming line and field
    schema.py        the values: Scenario, Line, Backend, CallSpec, MetricBound, CriterionStatus
    metrics.py       the metric names an expectation may bound
    expect.py        one call's document against the expectations -> Outcome (met, measured, evidence)
    runner.py        the calls on the rig (orchestrator.rig.LocalRig), K at a time -> CallResult
    summary.py       pass rates, p50/p95, an exact confidence interval for the median
    text.py, junit.py   what a person and a CI server read

Nothing here imports the command line (orchestrator/cli/scenario.py drives it).
"""
