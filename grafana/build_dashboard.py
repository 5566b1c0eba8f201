"""Writes grafana/dashboards/cmx-connect-exporter.json, the exporter's Grafana dashboard.

It is built with grafana-foundation-sdk, Grafana Labs' typed builders, so a misspelt
option fails here rather than in Grafana. The metric and label names come from the
project's catalogue: a "sessions by" section for each dimension in DIMENSIONS, so a
new dimension gets its panels with no change here. After editing, run
`python grafana/build_dashboard.py` (the SDK comes with the `test` extra); `--check`
only reports whether the JSON file is up to date, and the tests fail while it is not.

The JSON has no `__inputs`: the `datasource` template variable carries the
datasource, so the file works both through Grafana's import and through file
provisioning.
"""

import argparse
import itertools
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TypeVar

from grafana_foundation_sdk.builders import bargauge, common, piechart, prometheus, stat, table, timeseries
from grafana_foundation_sdk.builders.dashboard import (
    AnnotationQuery,
    Dashboard,
    DatasourceVariable,
    FieldColor,
    QueryVariable,
    Row,
    ThresholdsConfig,
)
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import dashboard as model
from grafana_foundation_sdk.models.common import (
    BigValueColorMode,
    BigValueGraphMode,
    BigValueJustifyMode,
    BigValueTextMode,
    GraphDrawStyle,
    LegendDisplayMode,
    LegendPlacement,
    SortOrder,
    StackingMode,
    TooltipDisplayMode,
    VisibilityMode,
    VizOrientation,
)
from grafana_foundation_sdk.models.piechart import PieChartLegendValues, PieChartType
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

from cmx_connect_exporter.counting.dimensions import (
    ACTIVE_SESSIONS,
    BYTES,
    DIMENSIONS,
    DIRECTION,
    DWELL,
    LOGINS,
    RETURNING,
    SPLITS,
    UNREADABLE_LOGIN_TIME,
    VISIT,
    VISITORS_TODAY,
    VISITORS_TODAY_BY_VISIT,
    VISITORS_TODAY_STAY,
    Dimension,
)
from cmx_connect_exporter.exposition import names
from cmx_connect_exporter.outcome import REASONS

OUTPUT = Path(__file__).parent / "dashboards" / "cmx-connect-exporter.json"

DATASOURCE = model.DataSourceRef(type_val="prometheus", uid="${datasource}")
TARGET = names.TARGET_LABEL
SELECTOR = f'job=~"$job", instance=~"$instance", {TARGET}=~"${TARGET}"'
# Series of one CMX: named by the CMX, as several CMX may sit behind one exporter instance.
BY_CMX = "{{" + TARGET + "}}"

# Matches CMXConnectCountsStale in deploy/prometheus/alerts.yml.
STALE_AFTER_SECONDS = 300

AnyPanel = TypeVar("AnyPanel", stat.Panel, timeseries.Panel, piechart.Panel, bargauge.Panel, table.Panel)
# A dashboard section: its row's title and its panels, laid out left to right by the SDK.
Section = tuple[str, list[stat.Panel | timeseries.Panel | piechart.Panel | bargauge.Panel | table.Panel]]


def of(metric: str, *matchers: str) -> str:
    """The metric, restricted to the dashboard's job and instance, and by any other label matchers given."""
    return f"{metric}{{{', '.join([SELECTOR, *matchers])}}}"


def chosen(label: str) -> str:
    """A matcher for the values chosen in the label's dashboard variable."""
    return f'{label}=~"${label}"'


def query(ref: str, expr: str, legend: str, *, instant: bool) -> prometheus.Dataquery:
    built = prometheus.Dataquery().datasource(DATASOURCE).ref_id(ref).expr(expr).legend_format(legend)
    return built.instant() if instant else built.range()


def panel(builder: AnyPanel, title: str, description: str, unit: str, expr: str, legend: str, *,
          instant: bool, size: tuple[int, int]) -> AnyPanel:
    """What every panel sets: one Prometheus query through the datasource variable, a unit, a size."""
    width, height = size
    return (builder.title(title).description(description).datasource(DATASOURCE)
            .with_target(query("A", expr, legend, instant=instant)).unit(unit).span(width).height(height))


def last_value() -> common.ReduceDataOptions:
    """Instant panels show the last value, which is the last complete poll's."""
    return common.ReduceDataOptions().calcs(["lastNotNull"]).fields("").values(False)


def thresholds(*steps: tuple[float | None, str]) -> ThresholdsConfig:
    """Steps as (value, colour); the first value is None, the base."""
    return (ThresholdsConfig().mode(model.ThresholdsMode.ABSOLUTE)
            .steps([model.Threshold(value=value, color=color) for value, color in steps]))


def stat_panel(title: str, description: str, unit: str, expr: str, legend: str = BY_CMX, *,
               size: tuple[int, int], steps: Sequence[tuple[float | None, str]] = ((None, "green"),),
               color_mode: BigValueColorMode = BigValueColorMode.VALUE,
               text_mode: BigValueTextMode = BigValueTextMode.AUTO) -> stat.Panel:
    return (panel(stat.Panel(), title, description, unit, expr, legend, instant=True, size=size)
            .thresholds(thresholds(*steps)).color_scheme(FieldColor().mode(model.FieldColorModeId.THRESHOLDS))
            .reduce_options(last_value()).color_mode(color_mode).graph_mode(BigValueGraphMode.NONE)
            .text_mode(text_mode).justify_mode(BigValueJustifyMode.AUTO).orientation(VizOrientation.AUTO))


def timeseries_panel(title: str, description: str, unit: str, expr: str, legend: str = BY_CMX, *,
                     size: tuple[int, int], stacked: bool = False, bars: bool = False) -> timeseries.Panel:
    stacking = common.StackingConfig().mode(StackingMode.NORMAL if stacked else StackingMode.NONE).group("A")
    legend_options = (common.VizLegendOptions().display_mode(LegendDisplayMode.LIST)
                      .placement(LegendPlacement.BOTTOM).show_legend(True))
    return (panel(timeseries.Panel(), title, description, unit, expr, legend, instant=False, size=size)
            .draw_style(GraphDrawStyle.BARS if bars else GraphDrawStyle.LINE).fill_opacity(60 if stacked else 10)
            .line_width(1).show_points(VisibilityMode.NEVER).span_nulls(False).stacking(stacking).min(0)
            .legend(legend_options)
            .tooltip(common.VizTooltipOptions().mode(TooltipDisplayMode.MULTI).sort(SortOrder.DESCENDING)))


def piechart_panel(title: str, description: str, unit: str, expr: str, legend: str, *,
                   size: tuple[int, int]) -> piechart.Panel:
    legend_options = (piechart.PieChartLegendOptions().display_mode(LegendDisplayMode.TABLE)
                      .placement(LegendPlacement.RIGHT).show_legend(True)
                      .values([PieChartLegendValues.VALUE, PieChartLegendValues.PERCENT]))
    return (panel(piechart.Panel(), title, description, unit, expr, legend, instant=True, size=size)
            .reduce_options(last_value()).pie_type(PieChartType.DONUT).legend(legend_options)
            .tooltip(common.VizTooltipOptions().mode(TooltipDisplayMode.SINGLE).sort(SortOrder.NONE)))


def bargauge_panel(title: str, description: str, unit: str, expr: str, legend: str, *,
                   size: tuple[int, int]) -> bargauge.Panel:
    return (panel(bargauge.Panel(), title, description, unit, expr, legend, instant=True, size=size)
            .reduce_options(last_value()).orientation(VizOrientation.HORIZONTAL).min(0))


# The overview table's columns: (header, unit, PromQL by CMX), one instant query each.
OVERVIEW_COLUMNS = [
    ("Polling", "none", f"max by ({TARGET}) ({of(names.UP.name)})"),
    ("Active sessions", "short", f"sum by ({TARGET}) ({of(ACTIVE_SESSIONS)})"),
    ("Age of last successful poll", "s", f"max by ({TARGET}) (time() - {of(names.LAST_SUCCESS.name)})"),
    ("Poll duration", "s", f"max by ({TARGET}) ({of(names.POLL_DURATION.name)})"),
    ("Failed polls in time range", "short",
     f"sum by ({TARGET}) (increase({of(names.POLL_ERRORS.name + '_total')}[$__range]))"),
]


def overview_section() -> Section:
    """One row per CMX: is it polled, how many guests, how fresh, how slow, how often failing."""
    overview = (table.Panel().title("Every CMX").description(
        "One row per CMX: whether its last poll completed (1), its active sessions, the age of its last "
        "successful poll, how long that poll took, and its failed polls in the time range.")
        .datasource(DATASOURCE).unit("short").span(24).height(8)
        .with_transformation(model.DataTransformerConfig(id_val="merge", options={}))
        .with_transformation(model.DataTransformerConfig(id_val="organize", options={
            "excludeByName": {"Time": True},
            "renameByName": {"cmx": "CMX", **{f"Value #{chr(ord('A') + n)}": header
                                               for n, (header, _, _) in enumerate(OVERVIEW_COLUMNS)}},
        })))
    for n, (_, _, expr) in enumerate(OVERVIEW_COLUMNS):
        overview = overview.with_target(prometheus.Dataquery().datasource(DATASOURCE).ref_id(chr(ord("A") + n))
                                        .expr(expr).instant().format(PromQueryFormat.TABLE))
    return ("Overview", [overview])


def sessions_section() -> Section:
    return ("Active sessions", [
        stat_panel("Active sessions now", "Guest Wi-Fi sessions active in CMX Connect, from the last complete poll.",
                   "short", f"sum({of(ACTIVE_SESSIONS)})", "Active sessions", size=(6, 8)),
        timeseries_panel("Active sessions over time", "Active sessions per CMX.", "short",
                         of(ACTIVE_SESSIONS), size=(18, 8)),
    ])


def dimension_section(dimension: Dimension) -> Section:
    """The active sessions split by one of the catalogue's dimensions, now and over time."""
    matchers = [chosen(dimension.label)] if dimension in SPLITS else []  # a split label has a variable of its own
    expr = f"sum by ({dimension.label}) ({of(dimension.metric, *matchers)})"
    legend = "{{" + dimension.label + "}}"
    word = dimension.title
    return (f"Sessions by {word}", [
        piechart_panel(f"By {word} now", f"Active sessions by {word}, from the last complete poll.",
                       "short", expr, legend, size=(8, 8)),
        timeseries_panel(f"By {word} over time", f"Active sessions by {word}, stacked: the series add up "
                         "to the total.", "short", expr, legend, size=(16, 8), stacked=True),
    ])


def venue_section() -> Section:
    """How long guests stay, how many arrive, how much they use: from the same polls as the counts."""
    buckets, total, count = of(f"{DWELL.metric}_bucket"), of(f"{DWELL.metric}_sum"), of(f"{DWELL.metric}_count")
    visits = of(VISIT.metric)
    stay = VISITORS_TODAY_STAY.metric
    returning = of(VISIT.metric, f'{VISIT.label}="{RETURNING}"')
    return ("Dwell, logins, data and visitors", [
        bargauge_panel("Dwell now", "Active guests connected for at most each bucket's time (cumulative), "
                       "from the last complete poll.", "short", f"sum by (le) ({buckets})", "≤ {{le}} s",
                       size=(8, 8)),
        timeseries_panel("Median and mean dwell", "Median (histogram_quantile over the buckets) and mean "
                         "(sum / count) time since each active guest's last login.", "s",
                         f"histogram_quantile(0.5, sum by (le) ({buckets}))", "median", size=(8, 8))
        .with_target(query("B", f"sum({total}) / sum({count})", "mean", instant=False)),
        stat_panel("Returning guests", "Share of active guests whose first login was on an earlier local day.",
                   "percentunit", f"sum({returning}) / sum({visits})",
                   "Returning", size=(4, 8)),
        stat_panel("Unreadable login times", "Active sessions whose lastLoginTime the exporter could not read: "
                   "above 0, CMX sends a time format the exporter does not know.", "short",
                   f"sum({of(UNREADABLE_LOGIN_TIME.metric)})", "Unreadable", size=(4, 8),
                   steps=[(None, "green"), (1, "orange")]),
        timeseries_panel("Logins per hour", "Guest logins seen between polls, as an hourly rate, per CMX.",
                         "short", f"sum by ({TARGET}) (rate({of(LOGINS.metric + '_total')}[$__rate_interval])) * 3600",
                         size=(12, 8), bars=True),
        timeseries_panel("Data used by active guests", "Bytes over the active sessions: sent (bytesSent) and "
                         "received (bytesReceived), as CMX reports them.", "bytes",
                         f"sum by ({DIRECTION}) ({of(BYTES.metric)})", "{{" + DIRECTION + "}}", size=(12, 8)),
        stat_panel("Visitors today", "Distinct guests with a login since midnight in CMX's time zone; empty "
                   "unless the exporter runs with CMX_VISITORS_TODAY=true.", "short",
                   f"sum({of(VISITORS_TODAY.metric)})", "Visitors today", size=(6, 8)),
        timeseries_panel("Visitors today, new and returning", "Visitors since local midnight, by whether their "
                         "first login was on an earlier day (CMX_VISITORS_TODAY).", "short",
                         f"sum by ({VISIT.label}) ({of(VISITORS_TODAY_BY_VISIT.metric)})",
                         "{{" + VISIT.label + "}}", size=(10, 8), stacked=True),
        timeseries_panel("Stay of today's visitors who left", "Median and mean time from last login to logout "
                         "of the visitors since local midnight who have left (CMX_VISITORS_TODAY).", "s",
                         f"histogram_quantile(0.5, sum by (le) ({of(stay + '_bucket')}))", "median", size=(8, 8))
        .with_target(query("B", f"sum({of(stay + '_sum')}) / sum({of(stay + '_count')})", "mean", instant=False)),
    ])


def health_section() -> Section:
    """Whether the numbers above can be trusted: polling up, fresh, error-free, and which version."""
    errors = of(f"{names.POLL_ERRORS.name}_total")  # a counter, exposed with the _total suffix
    up_mappings = [model.ValueMap(options={
        "0": model.ValueMappingResult(text="DOWN", color="red", index=0),
        "1": model.ValueMappingResult(text="UP", color="green", index=1),
    })]
    return ("Exporter health", [
        stat_panel("CMX polling", "1 (UP) when the exporter's last poll of CMX Connect completed.", "none",
                   of(names.UP.name), size=(6, 5), steps=[(None, "red"), (1, "green")],
                   color_mode=BigValueColorMode.BACKGROUND).mappings(up_mappings),
        stat_panel("Age of last successful poll", "Time since the last complete poll. The alert "
                   f"CMXConnectCountsStale fires past {STALE_AFTER_SECONDS} s.", "s",
                   f"time() - {of(names.LAST_SUCCESS.name)}", size=(6, 5),
                   steps=[(None, "green"), (STALE_AFTER_SECONDS // 2, "orange"), (STALE_AFTER_SECONDS, "red")]),
        stat_panel("Failed polls in time range", "Polls that failed, for any reason, in the dashboard's time range.",
                   "short", f"sum(increase({errors}[$__range]))", "Failed polls", size=(6, 5),
                   steps=[(None, "green"), (1, "red")]),
        stat_panel("Exporter version", "Version of each exporter instance.", "none",
                   f'{names.BUILD_INFO.name}{{job=~"$job", instance=~"$instance"}}',
                   "{{instance}}: {{version}}", size=(6, 5), text_mode=BigValueTextMode.NAME),
        timeseries_panel("Poll duration", "How long the last complete poll of CMX Connect took.", "s",
                         of(names.POLL_DURATION.name), size=(8, 8)),
        timeseries_panel("Requests per poll", "HTTP requests (pages) the last complete poll made.", "short",
                         of(names.POLL_REQUESTS.name), size=(8, 8)),
        timeseries_panel("Poll errors by reason",
                         f"Failed polls by reason: {', '.join(REASONS[:-1])} or {REASONS[-1]}.", "short",
                         f"sum by (reason) (increase({errors}[$__rate_interval]))", "{{reason}}",
                         size=(8, 8), stacked=True, bars=True),
    ])


def query_variable(name: str, label: str, query: str) -> QueryVariable:
    """A multi-value variable listing the label values the exporter reports, with All as `.*`."""
    return (QueryVariable(name).label(label).datasource(DATASOURCE).query(query)
            .refresh(model.VariableRefresh.ON_TIME_RANGE_CHANGED).sort(model.VariableSort.ALPHABETICAL_ASC)
            .include_all(True).multi(True).all_value(".*"))


def build() -> model.Dashboard:
    board = (
        Dashboard("CMX Connect guest Wi-Fi sessions")
        .uid("cmx-connect-exporter")
        .description("Active guest Wi-Fi sessions in Cisco CMX Connect, from cmx-connect-exporter.")
        .tags(["cmx-connect", "cisco", "wifi", "prometheus-exporter"])
        .timezone("browser")
        .editable()
        .tooltip(model.DashboardCursorSync.CROSSHAIR)
        .refresh("1m")
        .time("now-6h", "now")
        .version(1)
        .annotation(AnnotationQuery().built_in(1).datasource(model.DataSourceRef(type_val="grafana",
                    uid="-- Grafana --")).enable(True).hide(True).icon_color("rgba(0, 211, 255, 1)")
                    .name("Annotations & Alerts").type("dashboard"))
        .with_variable(DatasourceVariable("datasource").label("Data source").type("prometheus"))
        .with_variable(query_variable("job", "Job", f"label_values({names.UP.name}, job)"))
        .with_variable(query_variable("instance", "Instance",
                                      f'label_values({names.UP.name}{{job=~"$job"}}, instance)'))
        .with_variable(query_variable(TARGET, "CMX", f'label_values({names.UP.name}{{job=~"$job", '
                                                     f'instance=~"$instance"}}, {TARGET})'))
    )
    for split in SPLITS:  # found on the breakdown, or on the total when the exporter splits by it
        board.with_variable(query_variable(split.label, split.title.capitalize(),
                                           f'label_values({{__name__=~"{split.metric}|{ACTIVE_SESSIONS}", '
                                           f'job=~"$job"}}, {split.label})'))
    ids = itertools.count(1)
    for title, panels in [overview_section(), sessions_section(), *map(dimension_section, DIMENSIONS),
                          venue_section(),
                          health_section()]:
        board.with_row(Row(title).id(next(ids)))
        for item in panels:
            board.with_panel(item.id(next(ids)))
    return board.build()


def render() -> str:
    """The JSON with sorted keys, so that an SDK release that reorders fields changes no line."""
    return JSONEncoder(indent=2, sort_keys=True).encode(build()) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check that the JSON file is up to date")
    args = parser.parse_args(argv)
    if args.check:
        if not OUTPUT.exists() or OUTPUT.read_text() != render():
            print(f"{OUTPUT} is out of date: run python {Path(__file__).name}", file=sys.stderr)
            return 1
        return 0
    OUTPUT.write_text(render())
    return 0


if __name__ == "__main__":
    sys.exit(main())
