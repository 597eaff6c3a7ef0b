"""The self-contained HTML page of the report: numbers, pass/fail table, embedded figures.

The page has no external resource: styles are inline and every figure is a PNG embedded
as a ``data:image/png;base64`` URI (the PDF versions sit next to the page in ``plots/``).
The pass/fail table has ``id="requirements"`` and one ``<tr class="req ...">`` per
requirement of the requirements file. Right under the title, ``<p id="case">`` states
which case applies: a result with a lab gauge (every number for the full field) or a
sky-only result (map numbers from the non-linear part; scale not measured).
"""
from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Sequence

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 72em; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 1.6em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
th { background: #f0f0f0; }
tr.pass td.status { background: #c8f0c8; font-weight: bold; }
tr.fail td.status { background: #f5b8b8; font-weight: bold; }
tr.na td.status { background: #eee; color: #666; }
tr.nm td.status { background: #fde9b0; color: #653; font-weight: bold; }
p.case { padding: 0.5em 0.8em; border-left: 4px solid #4a8; background: #eef8f1; }
p.case-sky-only { border-left-color: #c80; background: #fdf4e3; }
p.case-unknown { border-left-color: #999; background: #f3f3f3; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid #ddd; }
figcaption { font-size: 0.85em; color: #444; }
.small { font-size: 0.85em; color: #555; } .warn { color: #a40; }
p.qc-fail { color: #b00000; font-weight: bold; padding: 0.4em 0.8em; border: 2px solid #b00000; background: #fdecec; }
"""


def _e(value):
    return html.escape("" if value is None else str(value))


def _num(value, fmt=".4g"):
    if value is None:
        return "&ndash;"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return format(value, fmt)
    return _e(value)


def _table(headers, rows, table_id=None, row_classes=None):
    attr = f' id="{table_id}"' if table_id else ""
    out = [f"<table{attr}><thead><tr>" + "".join(f"<th>{_e(h)}</th>" for h in headers) + "</tr></thead><tbody>"]
    for k, row in enumerate(rows):
        cls = f' class="{row_classes[k]}"' if row_classes else ""
        out.append(f"<tr{cls}>" + "".join(row) + "</tr>")
    out.append("</tbody></table>")
    return "\n".join(out)


def _td(value, fmt=".4g", cls=""):
    c = ' class="num"' if isinstance(value, (int, float)) and not isinstance(value, bool) else ""
    if cls:
        c = f' class="{cls}"'
    return f"<td{c}>{_num(value, fmt)}</td>"


def _requirements(rows):
    classes = []
    body = []
    for r in rows:
        status = r["status"]
        classes.append("req " + {"pass": "pass", "fail": "fail", "not measured": "nm"}.get(status, "na"))
        value = r["value"]
        shown = _num(value)
        if value is not None and r.get("sd") is not None:
            shown += f" &plusmn; {_num(r['sd'], '.2g')}"
        if value is not None and r.get("nonlinear_part"):
            shown += ' <span class="small">(non-linear part)</span>'
        goal = "&ndash;" if r.get("goal") is None else (
            f"{_num(r['goal'], 'g')} ({'met' if r['goal_met'] else 'not met'})"
            if r.get("goal_met") is not None else _num(r["goal"], "g"))
        body.append([f'<td data-requirement="{_e(r["id"])}">{_e(r["id"])}</td>', f"<td>{_e(r['title'])}</td>",
                     f"<td><code>{_e(r['metric'])}</code></td>", f'<td class="num">{shown}</td>',
                     f"<td class=\"num\">&lt; {_num(r['max'], 'g')}</td>", f"<td>{goal}</td>",
                     f"<td>{_e(r['unit'])}</td>", f'<td class="status">{_e(status)}</td>',
                     f"<td class=\"small\">{_e(r['reason'])}</td>"])
    return _table(["id", "requirement", "metric", "value", "pass if", "goal", "unit", "status", "note"],
                  body, table_id="requirements", row_classes=classes)


def _quality(quality):
    """The page's first line: the fit's quality flags in red (or a quiet line when none)."""
    if not quality:
        return ""
    if quality.get("ok"):
        return ('<p class="small qc-ok" id="quality">quality: the chain meets its convergence rule; '
                "the degree is inside the range tried</p>")
    return "".join(f'<p class="qc-fail" id="quality">{_e(p)}</p>' for p in quality.get("problems", []))


def _case(case):
    """The statement of which case applies (lab gauge or sky-only), for the top of the page."""
    if not case:
        return ""
    name = case.get("case", "unknown")
    title = {"lab": "Lab gauge", "joint": "Lab gauge", "sky-only": "No lab gauge",
             "unknown": "Gauge not recorded"}.get(name, name)
    return (f'<p id="case" class="case case-{_e(name)}" data-case="{_e(name)}"><b>{_e(title)}.</b> '
            f"{_e(case.get('statement', ''))}</p>")


def _on_sky(on_sky):
    """The table of what the sky measures: each sky dataset's on-sky pixel scale and
    position angle (``report["on_sky"]``), empty without sky data."""
    if not on_sky or not on_sky.get("datasets"):
        return ""
    rows = []
    for d in on_sky["datasets"]:
        sc, pa = d["pixel_scale_mas"], d.get("position_angle_deg")
        rot = d.get("rotation_from_nominal_deg")
        angle = (f"{pa['mean']:.4f} &plusmn; {pa['sd']:.2g}" if pa else
                 f"{rot['mean']:+.4f} &plusmn; {rot['sd']:.2g} from the nominal angles")
        ratio = d.get("sky_over_lab")
        rows.append([f"<td>{_e(d['name'])}</td>", f"<td class=\"num\">{d['n_exposures']}</td>",
                     f"<td class=\"num\">{sc['mean']:.5f} &plusmn; {sc['sd']:.2g}</td>",
                     f"<td class=\"num\">{angle}</td>",
                     f"<td class=\"num\">{ratio['mean']:.6f} &plusmn; {ratio['sd']:.2g}</td>" if ratio
                     else "<td>no lab scale (not measured)</td>"])
    return ("<h2>What the sky measures</h2>"
            + _table(["sky dataset", "exposures", "on-sky pixel scale (mas/pixel)",
                      "position angle of detector +y (deg)", "sky / lab scale"], rows, "on-sky")
            + f"<p class=\"small\">{_e(on_sky.get('definition', ''))}; {_e(on_sky.get('angle_definition', ''))}.</p>")


def _sky_residuals(rows, definition):
    """The table of each sky dataset's residuals against the catalogue and after the stars'
    fitted catalogue errors (``report["sky_residuals"]``), empty without sky data."""
    if not rows:
        return ""
    body = [[f"<td>{_e(r['dataset'])}</td>", _td(r["n_points"]),
             _td(r["against_catalog_mas"][0], ".3g"), _td(r["against_catalog_mas"][1], ".3g"),
             _td(r["against_catalog_rms_mas"], ".3g"),
             _td(r["after_star_errors_mas"][0], ".3g"), _td(r["after_star_errors_mas"][1], ".3g"),
             _td(r["after_star_errors_rms_mas"], ".3g")] for r in rows]
    return ("<h2 id=\"catalog-residuals\">Residuals against the catalogue</h2>"
            + _table(["sky dataset", "points used", "against the catalogue: rms x (mas)", "rms y (mas)",
                      "rms per axis (mas)", "after the stars' catalogue errors: rms x (mas)", "rms y (mas)",
                      "rms per axis (mas)"], body, "sky-residuals")
            + f"<p class=\"small\">{_e(definition)}. The figure <i>Residuals against the catalogue</i> "
              "shows them over the detector.</p>")


def figure_html(entry: dict) -> str:
    """The ``<figure>`` of one figure entry (PNG embedded), or a line saying why it was not
    drawn.

    Parameters
    ----------
    entry : dict
        An entry of :func:`astrocal.report.figures.make_figures`.

    Returns
    -------
    str
        HTML.
    """
    if "skipped" in entry:
        return (f'<p class="small skipped" data-figure="{_e(entry["name"])}"><b>{_e(entry["title"])}</b>: '
                f"not drawn &ndash; {_e(entry['skipped'])}</p>")
    data = base64.b64encode(Path(entry["png"]).read_bytes()).decode("ascii")
    pdf = Path(entry["pdf"]).name
    return (f'<figure data-figure="{_e(entry["name"])}"><img alt="{_e(entry["title"])}" '
            f'src="data:image/png;base64,{data}"><figcaption><b>{_e(entry["title"])}.</b> '
            f"{_e(entry.get('caption', ''))} (PDF: <code>plots/{_e(pdf)}</code>)</figcaption></figure>")


def render(report: dict, figures: Sequence[dict]) -> str:
    """The page for a report and its figures.

    Its sections, in order: the title and the result's provenance (:func:`_header`), the
    requirements, the map accuracy and the pixel scale (:func:`_map_accuracy`), the
    on-sky numbers, the stability against an earlier result (:func:`_stability`), the
    residuals per dataset (:func:`_residuals`), the outliers (:func:`_outliers`), the
    degree and the evidence (:func:`_degree`), the convergence (:func:`_convergence`) and
    the figures.

    Parameters
    ----------
    report : dict
        The report of :func:`astrocal.report.build.build_report`.
    figures : sequence of dict
        The figure entries of :func:`astrocal.report.figures.make_figures`.

    Returns
    -------
    str
        The HTML page.
    """
    r = report
    parts = _header(r)
    parts.append("<h2>Requirements</h2>")
    parts.append(_requirements(r["requirements"]))
    parts += _map_accuracy(r["map_accuracy"], r.get("map_accuracy_full_field"), r["pixel_scale"])
    parts.append(_on_sky(r.get("on_sky")))
    if r.get("stability"):
        parts += _stability(r["stability"])
    parts += _residuals(r)
    parts += _outliers(r["outliers"])
    parts += _degree(r)
    parts += _convergence(r["convergence"])
    parts.append("<h2>Figures</h2>")
    parts.extend(figure_html(f) for f in figures)
    parts.append("<p class=\"small\">The same numbers are in <code>report.json</code>.</p></body></html>")
    return "\n".join(parts) + "\n"


def _header(r):
    """The page's head, the quality marks, the title, the case and the result's provenance
    (with the earlier result compared against, if any): a list of HTML parts."""
    parts = [f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
             f"<title>astrocal accuracy budget: {_e(r['instrument'])} {_e(r['filter'])}</title>"
             f"<style>{STYLE}</style></head><body>",
             _quality(r.get("quality")),
             f"<h1>Accuracy budget: {_e(r['instrument']) or 'instrument not recorded'}, filter {_e(r['filter'])}</h1>",
             _case(r.get("case")),
             "<p class=\"small\">" + "<br>".join([
                 f"result: <code>{_e(r['result'])}</code>",
                 f"band: {_e(r['band'] or 'not a METIS imager band')}; degree {r['degree']}; "
                 f"{r['n_draws']} posterior draws; detector {r['detector_shape'][1]} x {r['detector_shape'][0]} pixels",
                 f"campaign sha256: <code>{_e(r['campaign_sha256'])}</code>",
                 f"fitted with astrocal {_e(r['fit_astrocal_version'])}; report by astrocal "
                 f"{_e(r['astrocal_version'])} at {_e(r['created'])}",
                 "inputs: " + ", ".join(f"<code>{_e(p)}</code>" for p in r.get("inputs", [])),
             ]) + "</p>"]
    st = r.get("stability")
    if st:
        parts.append(f"<p class=\"small\">compared with the earlier result <code>{_e(st['against'])}</code> "
                     f"(campaign sha256 <code>{_e(st['against_campaign_sha256'])}</code>)</p>")
    return parts


def _map_accuracy(ma, full, ps):
    """The map accuracy (``ma``; ``full``: with the affine part, when it was left out), the
    data footprint and the pixel scale (``ps``): a list of HTML parts."""
    parts = []
    nonlinear = ma.get("part") == "non-linear"
    parts.append("<h2>Map accuracy" + (" (non-linear part)" if nonlinear else "") + " and pixel scale</h2>")
    what = "1-sigma of the non-linear part of the map" if nonlinear else "1-sigma of the map"
    parts.append(_table(["quantity", "rms over the field", "maximum over the field"], [
        [f"<td>{what} (mas)</td>", _td(ma["rms_mas"]), _td(ma["max_mas"])],
        [f"<td>{what} (pixel)</td>", _td(ma["rms_px"]), _td(ma["max_px"])],
    ], table_id="map-accuracy"))
    parts.append(f"<p class=\"small\">{_e(ma['definition'])}; grid {ma['grid']} x {ma['grid']}; "
                 f"maximum at pixel ({ma['max_at_px'][0]:.0f}, {ma['max_at_px'][1]:.0f}).</p>")
    if "extrapolated_fraction" in ma:
        ins = ma.get("inside_footprint")
        inside = (f"Inside it the 1-sigma is {ins['rms_mas']:.4g} mas rms, {ins['max_mas']:.4g} mas at most "
                  f"({ins['n_positions']} of the {ma['grid']**2} grid positions)." if ins else
                  "No grid position falls inside it.")
        parts.append(f"<p class=\"small\" id=\"footprint\">Data footprint (convex hull of the positions "
                     f"used): {100 * (1 - ma['extrapolated_fraction']):.1f} % of the detector; beyond it "
                     f"the map is an extrapolation, whose intervals rest on the learnt widths of the "
                     f"highest degrees. {inside}</p>")
    if full:
        parts.append(f"<p class=\"small warn\">With the affine part included, the 1-sigma would be "
                     f"{full['max_mas']:.4g} mas at most ({full['max_px']:.3g} pixels; rms "
                     f"{full['rms_mas']:.4g} mas): {_e(full['note'])}.</p>")
    if ps.get("measured", True):
        parts.append(f"<p>Pixel scale: <b>{ps['mean_mas']:.6f} &plusmn; {ps['sd_mas']:.2g} mas/pixel</b> "
                     f"(relative 1-sigma {ps['sd_rel']:.2g}).</p>")
    else:
        parts.append(f"<p id=\"pixel-scale\">Pixel scale: <b>not measured</b> &ndash; {_e(ps['reason'])}. "
                     f"<span class=\"small\">(Its posterior, {ps['prior_mean_mas']:.6f} &plusmn; "
                     f"{ps['prior_sd_mas']:.2g} mas/pixel, is {_e(ps['note'])}.)</span></p>")
    return parts


def _stability(st):
    """The stability against the earlier result (``report["stability"]``): a list of HTML
    parts."""
    parts = []
    parts.append("<h2>Stability against the earlier result"
                 + (" (non-linear part)" if st.get("part") == "non-linear" else "") + "</h2>")
    psm = st.get("pixel_scale_mas")
    scale_row = (["<td>pixel scale now / earlier (mas/pixel)</td>",
                  f"<td class=\"num\">{psm['new']:.6f} / {psm['old']:.6f}</td>",
                  f"<td class=\"num\">{psm['new_sd']:.2g} / {psm['old_sd']:.2g}</td>"] if psm else
                 ["<td>pixel scale now / earlier (mas/pixel)</td>", "<td>not measured</td>", "<td>&ndash;</td>"])
    nm = st.get("not_measured") or {}

    def row(label, key, sd_key, fmt=".4g"):
        if key in nm:
            return [f"<td>{label}</td>", "<td>not measured</td>", "<td>&ndash;</td>"]
        return [f"<td>{label}</td>", _td(st[key], fmt), _td(st[sd_key], ".2g")]

    dlabel = "non-linear distortion" if st.get("part") == "non-linear" else "distortion"
    parts.append(_table(["quantity", "value", "1-sigma"], [
        scale_row,
        row("relative scale change", "scale_change_rel", "scale_change_rel_sd"),
        row(f"largest {dlabel} change (pixel)", "distortion_change_max_px", "distortion_change_sd_px"),
        row(f"largest {dlabel} change / half-diagonal", "distortion_change_rel", "distortion_change_rel_sd"),
        row("scale change at the corners (mas)", "plate_scale_change_edge_mas", "plate_scale_change_edge_sd_mas"),
    ], table_id="stability"))
    parts.append(f"<p class=\"small\">{_e(st['definition'])}</p>")
    return parts


def _residuals(r):
    """The residuals per dataset and against the catalogue: a list of HTML parts."""
    parts = []
    parts.append("<h2>Residuals per dataset</h2>")
    if r["residuals"]:
        parts.append(_table(
            ["dataset", "kind", "points", "used", "outliers", "rms (mas)", "rms (pixel)", "rms x (pixel)",
             "rms y (pixel)", "mean chi2 (2 dof)", "sd of normalised residuals"],
            [[f"<td>{_e(d['dataset'])}</td>", f"<td>{_e(d['kind'])}</td>", _td(d["n_points"]), _td(d["n_used"]),
              _td(d["n_outliers"]), _td(d["rms_mas"]), _td(d["rms_px"]), _td(d["rms_x_px"]), _td(d["rms_y_px"]),
              _td(d["chi2_mean"], ".3g"), _td(d["z_sd"], ".3g")] for d in r["residuals"]]))
    else:
        parts.append("<p class=\"warn\">no residual table in the result</p>")
    parts.append(_sky_residuals(r.get("sky_residuals"), r.get("sky_residuals_definition", "")))
    return parts


def _outliers(o):
    """The outliers (``report["outliers"]``): a list of HTML parts."""
    parts = []
    parts.append(f"<h2>Outliers</h2><p>{_num(o.get('n'))} point(s) flagged and left out"
                 + (f" of {o['n_points']} (fraction {o['fraction']:.3g}; mixture estimate "
                    f"{_num(o.get('fraction_estimate'), '.3g')})" if "n_points" in o else "") + ".</p>")
    if o.get("points"):
        parts.append(_table(["point id", "dataset", "exposure", "source", "x", "y", "dx (pixel)", "dy (pixel)"],
                            [[_td(p["point_id"], "d"), f"<td>{_e(p['dataset'])}</td>", f"<td>{_e(p['exposure'])}</td>",
                              f"<td>{_e(p['source'])}</td>", _td(p["x"], ".1f"), _td(p["y"], ".1f"),
                              _td(p["dx_px"], ".3g"), _td(p["dy_px"], ".3g")] for p in o["points"]]))
    return parts


def _degree(r):
    """The degree and the evidence, and the field model: a list of HTML parts."""
    parts = []
    parts.append("<h2>Degree and evidence</h2>")
    parts.append(_table(["degree", "residual field", "log evidence", "difference to the best", "probability", "note"],
                        [[_td(e["degree"], "d"), f"<td>{'yes' if e.get('residual') else 'no'}</td>",
                          _td(e["log_evidence"], ".6g"), _td(e["delta_log_evidence"], ".3f"),
                          _td(e.get("probability"), ".3f"), f"<td>{_e(e['note'])}</td>"] for e in r["evidence"]]))
    fm = r.get("field_model") or {}
    if fm:
        text = f"Field: polynomial of degree {_num(fm.get('degree'), 'd')}"
        if fm.get("residual"):
            text += (f" plus a residual field beyond it (Matérn-5/2, {_num(fm.get('residual_functions'), 'd')} "
                     f"functions per component; rms {_num(fm.get('residual_rms_mas'), '.3g')} mas, "
                     + (f"correlation lengths {_num(fm['residual_lengths_px'][0], '.4g')} px along x, "
                        f"{_num(fm['residual_lengths_px'][1], '.4g')} px along y)" if fm.get("residual_lengths_px")
                        else f"correlation length {_num(fm.get('residual_length_px'), '.4g')} px)"))
        elif fm.get("residual_tried"):
            text += " (the evidence preferred it to the polynomial plus a residual field)"
        if fm.get("unresolved_px") is not None:
            text += (f"; unresolved scatter {_num(fm.get('unresolved_px'), '.3g')} px, included in the map's "
                     "1-sigma")
        if fm.get("degree_at_top"):
            text += "; the degree is the top of the range tried"
        parts.append(f"<p id=\"field-model\">{text}.</p>")
        if fm.get("dither_half_period_px") is not None:
            parts.append(
                f"<p id=\"dither-separation\">The mask offsets (rms spread {_num(fm.get('dither_span_px'), '.0f')} px) "
                f"tell field structure from the mask's hole errors only up to periods of about "
                f"<b>{_num(fm.get('dither_half_period_px'), '.0f')} px</b> (separable fraction below one half beyond; "
                "<code>dither_separation</code> in fit.json). Small structure on longer scales is shared between "
                "the field and the hole errors by the priors alone (the field's widths, the residual field's "
                "stationary Matérn prior when it is kept, the hole errors' common scale): the map's 1-sigma "
                "there is as good as those priors are for it. Wider or more varied offsets move this period up."
                "</p>")
    rule = r.get("degree_rule")
    parts.append(f"<p>Degree used: <b>{r['degree']}</b>" + (f" ({_e(rule)}; probabilities with equal "
                                                            "prior odds over the degrees tried)" if rule else "")
                 + ".</p>")
    return parts


def _convergence(c):
    """The sampler's convergence (``report["convergence"]``): a list of HTML parts."""
    parts = []
    parts.append("<h2>Convergence</h2>")
    names = c.get("hyper_names", [])
    tau, neff = c.get("tau") or [], c.get("n_effective") or []
    parts.append(_table(["hyperparameter", "autocorrelation time", "effective samples"],
                        [[f"<td><code>{_e(n)}</code></td>", _td(tau[k] if k < len(tau) else None, ".3g"),
                          _td(neff[k] if k < len(neff) else None, ".4g")] for k, n in enumerate(names)]))
    parts.append(f"<p>steps {_num(c.get('steps'))}, burn-in {_num(c.get('burn'))}, walkers {_num(c.get('walkers'))}, "
                 f"mean acceptance {_num(c.get('acceptance'), '.3f')}, steps / max tau "
                 f"{_num(c.get('steps_over_tau'), '.3g')}, converged: <b>{_num(c.get('converged'))}</b></p>")
    for w in c.get("warnings", []) or []:
        parts.append(f"<p class=\"warn\">{_e(w)}</p>")
    for name in c.get("unconstrained", []) or []:
        parts.append(f"<p class=\"warn\">not constrained by the data: <code>{_e(name)}</code></p>")
    for desc in c.get("inseparable", []) or []:
        parts.append(f"<p class=\"warn\">not separated by the data: <code>{_e(desc)}</code></p>")
    return parts
