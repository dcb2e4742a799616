"""A memory profile shown: its table for the log, its rows for the chart, its summary for metrics/profile."""

from paddy.memory.profile import ESTIMATE


def summary_of(profile):
    """The profile in short (metrics/profile/<model>.json, a plain file: not a metric of the experiment): the
    choices, and the peak (process total, GB) at each candidate."""
    chosen = next((r for r in profile["table"] if r["micro_batch"] == profile["micro_batch"]), None)
    return {
        "measured": profile["device"] != ESTIMATE,
        "micro_batch": profile["micro_batch"],
        "accumulation": profile["accumulation"],
        "eval_batch": profile["eval_batch"],
        "peak_gb": chosen["total_gb"] if chosen else None,
        "limit_gb": profile["limit_gb"],
        "peak_gb_at": {str(r["micro_batch"]): (None if r.get("oom") else r["total_gb"]) for r in profile["table"]},
        **({"sizes": profile["sizes"]} if "sizes" in profile else {}),  # progressive resizing's: every one fits
    }


def plot_rows(profile):
    """Rows for the memory chart: one bar per micro-batch and eval batch, and one for the limit they face."""
    rows = []
    for key, table in (("micro_batch", profile["table"]), ("eval_batch", profile["eval_table"])):
        label = "x" if key == "micro_batch" else "eval x"
        for r in table:
            chosen = " (chosen)" if r[key] == profile[key] else ""
            fits = not r.get("oom") and r["total_gb"] <= profile["limit_gb"]
            # An out-of-memory candidate has no peak: draw it past the limit so the chart still shows it does not fit.
            peak = profile["limit_gb"] * 1.5 if r.get("oom") else r["total_gb"]
            rows.append({"bar": f"{profile['model']} {label}{r[key]}{chosen}", "peak_gb": peak, "fits": fits})
    rows.append({"bar": f"{profile['model']} limit", "peak_gb": profile["limit_gb"], "fits": True})
    return rows


def format_table(profiles):
    """The profiles as a text table: training rows (micro-batch x accumulation) then prediction rows."""
    show_model = any(p["model"] != p["arch"] for p in profiles)
    name_w = max([5] + [len(p["model"]) for p in profiles]) if show_model else -1
    arch_w = max([4] + [len(p["arch"]) for p in profiles])
    prec_w = max([4] + [len(precision_label(p)) for p in profiles])
    head = (
        (f"{'model':<{name_w}} " if show_model else "")
        + f"{'arch':<{arch_w}} {'size':>7} {'prec':>{prec_w}} {'step':>5} {'batch':>9} {'alloc GB':>8} "
        f"{'reserved':>8} {'total GB':>8}  fits  source"
    )
    lines = [head, "-" * len(head)]
    for p in profiles:
        for key, table in (("micro_batch", p["table"]), ("eval_batch", p["eval_table"])):
            for r in table:
                size = f"{r.get('size', p['size'])[0]}x{r.get('size', p['size'])[1]}"  # where the peak was
                if key == "micro_batch":
                    step, batch = "train", f"{r['micro_batch']}x{r['accumulation']}"
                else:
                    step, batch = "eval", str(r["eval_batch"])
                if r.get("oom"):
                    nums = f"{'OOM':>8} {'':>8} {'':>8}  no  "
                else:
                    fits = "yes" if r["total_gb"] <= p["limit_gb"] else "no"
                    nums = f"{r['allocated_gb']:>8.2f} {r['reserved_gb']:>8.2f} {r['total_gb']:>8.2f}  {fits:<4}"
                mark = "*" if r[key] == p[key] else " "
                model = f"{p['model']:<{name_w}} " if show_model else ""
                lines.append(
                    f"{model}{p['arch']:<{arch_w}} {size:>7} {precision_label(p):>{prec_w}} {step:>5} {batch:>8}{mark} "
                    f"{nums}  {p['device']}"
                )
    if profiles:
        p = profiles[0]
        lines.append(
            f"* chosen: the largest batch whose total (reserved + CUDA context) is within {p['limit_gb']:.1f} GB "
            f"(budget {p['budget_gb']} GB less {p['headroom']:.0%} headroom); train batch = micro-batch x "
            f"accumulation = {p['effective_batch']} samples per optimizer step"
        )
    for p in profiles:
        if "sizes" in p:
            sizes = ", ".join(f"{h}x{w}" for h, w in p["sizes"])
            lines.append(
                f"{p['model']}: progressive resizing trains it at {sizes}; each row is the largest peak over those "
                "sizes (its size column: where it was), so the batches chosen fit every phase"
            )
    if any(p["device"] == ESTIMATE for p in profiles):
        lines.append(
            "estimate: an estimate for a CUDA card, in the precision it would train in there (CUDA plan), not a "
            "measurement of this machine, whose own run may train in another precision (fp32 on the CPU by default)"
        )
    return "\n".join(lines)


def precision_label(profile):
    """The table's precision: an estimate is a plan for a CUDA card, whatever this machine trains in."""
    return profile["precision"] + (" (CUDA plan)" if profile["device"] == ESTIMATE else "")
