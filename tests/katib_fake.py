"""Katib's metrics collection and median stopping, as its sources at kubeflow/katib v0.19.0 do them, for the
emulator's fake Katib controller (tests/test_k8s_katib.py). Each function names the upstream file it follows;
what could not be read offline (Go's own time.Parse, klog's header) is said where it is used.

The path of a metric on a real Katib, StdOut collector:
1. the pod webhook wraps the primary container in `sh -c "<command and args> 1>/var/log/katib/metrics.log 2>&1
   [|| <early-stopped check>] && echo completed > /var/log/katib/$$$$.pid"` and injects the sidecar
   `metrics-logger-and-collector` with `-m <objective;additional...> -f <metricsFormat joined by ;> -format TEXT`
   (and `-stop-rule name;value;comparison;startStep` per early stopping rule): wrap_command, collector_args;
2. the sidecar prints every line of that file to its own log through klog (klog_line) and, with stop rules,
   watches each line for them (first_stop): on a hit it ends the training process, reports the file's
   observations and asks the early stopping service to mark the Trial EarlyStopped;
3. the observations are the file's lines parsed by parseLogsInTextFormat (parse_logs_in_text_format), stored in
   the DB manager's observation_logs (ObservationDB: ordered by time, microseconds); the Trial's
   status.observation is getMetrics of them (observation);
4. medianstop (MedianStop) gives each new Trial the rule `<objective> greater <mean of the succeeded Trials'
   averages over their first start_step observations>` once min_trials_required have succeeded.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

METRICS_FILE = "/var/log/katib/metrics.log"  # pkg/apis/controller/common/v1beta1/common_types.go DefaultFilePath
COLLECTOR = "metrics-logger-and-collector"  # pkg/metricscollector/v1beta1/common/const.go, StdOut and File
UNAVAILABLE = "unavailable"  # pkg/controller.v1beta1/consts/const.go UnavailableMetricValue
# pkg/metricscollector/v1beta1/common/const.go DefaultFilter, used when metricsFormat is empty
DEFAULT_FILTER = r"([\w|-]+)\s*=\s*([+-]?\d*(\.\d+)?([Ee][+-]?\d+)?)"
ZERO_TIME = "0001-01-01T00:00:00Z"  # Go's time.Time{}.UTC().Format(time.RFC3339)

# The grammar of Go's RFC3339 fast path (time/format_rfc3339.go parseRFC3339, Go >= 1.20; katib v0.19.0's go.mod
# says go 1.24.0): date 'T' time, optional '.' fraction of digits, then 'Z' or +hh:mm / -hh:mm. Go's slower
# general parser, tried after it, accepts a little more (we could not read Go's source offline); this is the
# subset, so a line this accepts Go accepts too.
_RFC3339 = re.compile(r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?(Z|[+-]\d{2}:\d{2})\Z")


def parse_rfc3339_nano(text: str) -> datetime | None:
    """time.Parse(time.RFC3339Nano, text) as a UTC datetime (microseconds kept), None where it errs."""
    found = _RFC3339.match(text)
    if found is None:
        return None
    year, month, day, hour, minute, second = (int(part) for part in found.groups()[:6])
    fraction, zone = found.group(7) or "", found.group(8)
    try:
        stamp = datetime(year, month, day, hour, minute, second, int((fraction + "000000")[:6]), tzinfo=UTC)
    except ValueError:  # Go checks the ranges too (month 1-12, the month's days, hour < 24, ...)
        return None
    if zone != "Z":
        sign = 1 if zone[0] == "+" else -1
        stamp -= sign * timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6]))
    return stamp


@dataclass(frozen=True)
class MetricLog:
    timestamp: str
    name: str
    value: str


def filter_regexes(filters: list[str]) -> list[re.Pattern[str]]:
    """GetFilterRegexpList (pkg/metricscollector/v1beta1/file-metricscollector/file-metricscollector.go): the
    default filter when none is given. Go's regexp is RE2; these patterns mean the same in Python's re."""
    return [re.compile(text) for text in (filters or [DEFAULT_FILTER])]


def parse_logs_in_text_format(lines: list[str], metrics: list[str], filters: list[str]) -> list[MetricLog]:
    """parseLogsInTextFormat and newObservationLog (file-metricscollector.go, v0.19.0): a line counts only when
    it contains a metric's name; its first space-separated field is its time when RFC3339Nano parses it, else
    the zero time; every match of every filter gives (group 1 trimmed, group 2 trimmed), kept when group 1 is
    one of `metrics`. No objective observation at all: one `unavailable` observation at the zero time."""
    regexes = filter_regexes(filters)
    logs: list[MetricLog] = []
    for line in lines:
        if not any(metric in line for metric in metrics):
            continue
        timestamp = ZERO_TIME
        parts = line.split(" ", 1)
        if len(parts) == 2 and parse_rfc3339_nano(parts[0]) is not None:
            timestamp = parts[0]
        for regex in regexes:
            for found in regex.finditer(line):
                if regex.groups < 2:
                    continue
                name, value = (found.group(1) or "").strip(), (found.group(2) or "").strip()
                if name in metrics:
                    logs.append(MetricLog(timestamp, name, value))
    if not any(log.name == metrics[0] for log in logs):
        return [MetricLog(ZERO_TIME, metrics[0], UNAVAILABLE)]
    return logs


class ObservationDB:
    """The DB manager's observation_logs (pkg/db/v1beta1/mysql/init.go: `time DATETIME(6)`; mysql.go
    RegisterObservationLog stores each log's RFC3339Nano time at microseconds, GetObservationLog reads them
    `ORDER BY time`). MySQL gives no order among equal times; the fake gives them latest first, the worst case
    a trial whose lines carry no timestamp meets (every one at the zero time)."""

    def __init__(self) -> None:
        self.rows: dict[str, list[tuple[datetime, MetricLog]]] = {}

    def register(self, trial: str, logs: list[MetricLog]) -> None:
        for log in logs:
            stamp = parse_rfc3339_nano(log.timestamp)
            assert stamp is not None, f"Error parsing start time {log.timestamp}"  # mysql.go refuses it too
            self.rows.setdefault(trial, []).append((stamp, log))

    def get(self, trial: str, metric: str | None = None) -> list[MetricLog]:
        rows = [row for row in self.rows.get(trial, []) if metric is None or row[1].name == metric]
        numbered = list(enumerate(rows))
        numbered.sort(key=lambda item: (item[1][0], -item[0]))
        return [log for _, (_, log) in numbered]


def observation(logs: list[MetricLog], names: list[str]) -> dict:
    """A Trial's status.observation: getMetrics (pkg/controller.v1beta1/trial/trial_controller_util.go, v0.19.0)
    over the trial's observation log: min and max of the values that parse as floats (its `else if` kept: a
    value below the min is not tried as a max), latest the value of the latest time (a later row wins a tie)."""
    metrics = {name: {"name": name, "min": UNAVAILABLE, "max": UNAVAILABLE, "latest": UNAVAILABLE}
               for name in names}
    latest: dict[str, datetime] = {}
    for log in logs:
        metric = metrics.get(log.name)
        if metric is None:
            continue
        try:
            value = float(log.value)
        except ValueError:
            value = None
        if value is not None:
            if metric["min"] == UNAVAILABLE:
                metric["min"] = metric["max"] = log.value
            elif value < float(metric["min"]):
                metric["min"] = log.value
            elif value > float(metric["max"]):
                metric["max"] = log.value
        stamp = parse_rfc3339_nano(log.timestamp)
        assert stamp is not None
        if log.name not in latest or not latest[log.name] > stamp:
            latest[log.name] = stamp
            metric["latest"] = log.value
    return {"metrics": list(metrics.values())}


def observation_available(status_observation: dict, objective: str) -> bool:
    """Trial.IsObservationAvailable (pkg/apis/controller/trials/v1beta1/util.go, v0.19.0): the objective
    metric is there and its latest value is not `unavailable`."""
    return any(m["name"] == objective and m["latest"] != UNAVAILABLE for m in status_observation.get("metrics", []))


@dataclass
class MedianStop:
    """The medianstop service (pkg/earlystopping/v1beta1/medianstop/service.py, v0.19.0): settings from the
    Experiment's earlyStopping (defaults min_trials_required 3, start_step 4); for each Succeeded Trial not
    seen before, the average of its first start_step objective observations as the DB orders them; once
    min_trials_required Trials are averaged, the rule `objective <comparison> <the mean of those averages>`
    (it is called the median, it is the mean) with start_step, comparison `greater` to minimize (`less` to
    maximize); before that, no rule."""

    experiment: dict
    db: ObservationDB
    min_trials_required: int = 3
    start_step: int = 4
    averages: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for setting in self.experiment["spec"]["earlyStopping"].get("algorithmSettings") or []:
            if setting["name"] == "min_trials_required":
                self.min_trials_required = int(setting["value"])
            elif setting["name"] == "start_step":
                self.start_step = int(setting["value"])
        objective = self.experiment["spec"]["objective"]
        self.objective = objective["objectiveMetricName"]
        self.comparison = "less" if objective["type"] == "maximize" else "greater"

    def rules(self, succeeded: list[str]) -> list[dict]:
        """GetEarlyStoppingRules given the names of the Experiment's Succeeded Trials."""
        for trial in succeeded:
            if trial not in self.averages:
                first = self.db.get(trial, self.objective)[:self.start_step]
                self.averages[trial] = sum(float(log.value) for log in first) / len(first)
        if len(self.averages) < self.min_trials_required:
            return []
        median = sum(self.averages.values()) / len(self.averages)
        return [{"name": self.objective, "value": str(median), "comparison": self.comparison,
                 "startStep": self.start_step}]


def collector_args(trial: dict) -> list[str]:
    """The sidecar's args, getMetricsCollectorArgs (pkg/webhook/v1beta1/pod/inject_webhook.go, v0.19.0), less
    the DB and early stopping service addresses: `-t` the Trial, `-m` its metric names joined by `;`
    (objective first), `-o-type`, `-path` the metrics file, `-f` the metricsFormat joined by `;`, `-format
    TEXT` for StdOut, and a `-stop-rule name;value;comparison;startStep` per rule."""
    spec = trial["spec"]
    objective = spec["objective"]
    names = ";".join([objective["objectiveMetricName"], *objective.get("additionalMetricNames", [])])
    collector = spec["metricsCollector"]
    args = ["-t", trial["metadata"]["name"], "-m", names, "-o-type", objective["type"]]
    if collector["collector"]["kind"] == "StdOut":
        args += ["-path", METRICS_FILE]
    formats = ((collector.get("source") or {}).get("filter") or {}).get("metricsFormat") or []
    if formats:
        args += ["-f", ";".join(formats)]
    if collector["collector"]["kind"] == "StdOut":
        args += ["-format", "TEXT"]
    for rule in spec.get("earlyStoppingRules") or []:
        args += ["-stop-rule", f"{rule['name']};{rule['value']};{rule['comparison']};{rule.get('startStep', 0)}"]
    return args


@dataclass
class Sidecar:
    """The sidecar's flags as cmd/metricscollector/v1beta1/file-metricscollector/main.go (v0.19.0) reads them:
    metric names and filters split at `;`, stop rules each `name;value;comparison;startStep`."""

    trial: str
    metrics: list[str]
    objective_type: str
    filters: list[str]
    file_format: str
    stop_rules: list[dict]

    @classmethod
    def from_args(cls, args: list[str]) -> Sidecar:
        flags: dict[str, str] = {}
        rules: list[dict] = []
        for flag, value in zip(args[::2], args[1::2], strict=True):
            if flag == "-stop-rule":
                name, rule_value, comparison, start = value.split(";")
                rules.append({"name": name, "value": rule_value, "comparison": comparison, "startStep": int(start)})
            else:
                flags[flag] = value
        return cls(flags["-t"], flags["-m"].split(";") if flags.get("-m") else [], flags["-o-type"],
                   flags["-f"].split(";") if flags.get("-f") else [], flags.get("-format", ""), rules)

    def collect(self, lines: list[str]) -> list[MetricLog]:
        """reportMetrics: CollectObservationLog of the metrics file (TEXT)."""
        assert self.file_format == "TEXT"
        return parse_logs_in_text_format(lines, self.metrics, self.filters)

    def first_stop(self, lines: list[str]) -> int | None:
        """watchMetricsFile and updateStopRules (main.go, v0.19.0): the index of the line after which every stop
        rule has been met (the sidecar then ends training), or None. Only a line containing a rule's name is
        matched; the objective's value is the best one so far (min to minimize); a rule with a start step is
        tried only at exactly its start_step-th observation (the counter goes 1 -> 0 there, then below 0)."""
        rules = [dict(rule) for rule in self.stop_rules]
        if not rules:
            return None
        steps = {rule["name"]: rule["startStep"] for rule in rules if rule["startStep"] != 0}
        regexes = filter_regexes(self.filters)
        best: float | None = None
        for index, line in enumerate(lines):
            if not any(rule["name"] in line for rule in rules):
                continue
            for regex in regexes:
                for found in regex.finditer(line):
                    name, value = found.group(1).strip(), float(found.group(2).strip())
                    for rule in list(rules):
                        if name != rule["name"]:
                            continue
                        if name == self.metrics[0]:
                            if best is None or (self.objective_type == "maximize" and value > best) or \
                                    (self.objective_type == "minimize" and value < best):
                                best = value
                            value = best
                        if name in steps:
                            steps[name] -= 1
                            if steps[name] != 0:
                                continue
                        limit = float(rule["value"])
                        if (rule["comparison"] == "equal" and value == limit) or \
                                (rule["comparison"] == "less" and value < limit) or \
                                (rule["comparison"] == "greater" and value > limit):
                            rules.remove(rule)
            if not rules:
                return index
        return None


def wrap_command(container: dict, early_stopping: bool) -> dict:
    """wrapWorkerContainer (pkg/webhook/v1beta1/pod/utils.go, v0.19.0) for the StdOut collector: the command and
    args joined by spaces into one `sh -c` string, stdout and stderr to the metrics file, the early-stopped
    check when the Trial has rules, then the completion mark."""
    args = [*container["command"], *container.get("args", [])]
    command = ["sh", "-c"]
    if args[0] in ("sh", "bash") and args[1] == "-c":
        command, args = args[:2], args[2:]
    args.append(f"1>{METRICS_FILE} 2>&1")
    if early_stopping:
        args += ["||", "if test -f /var/log/katib/$$$$.pid && [ $(head -n 1 /var/log/katib/$$.pid) = early-stopped ];"
                       " then echo Training Container was Early Stopped; else echo Training Container was Failed;"
                       " exit 1; fi"]
    args += ["&&", "echo completed > /var/log/katib/$$$$.pid"]
    return {**container, "command": command, "args": [" ".join(args)]}


def klog_line(text: str, when: datetime, pid: int = 1, source: str = "main.go:147") -> str:
    """One line the sidecar prints with klog.Info: klog's header `Immdd hh:mm:ss.uuuuuu <pid, 7 wide>
    <file:line>] ` before the text (klog v2's text format; klog's source is not mirrored here, this is its
    documented layout)."""
    return f"I{when:%m%d %H:%M:%S}.{when.microsecond:06d} {pid:7d} {source}] {text}"
