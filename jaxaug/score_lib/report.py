"""scores.json and scores.md: every figure in JSON, and the tables a person reads (one row per method); the
terminal summary from the same cells.

Every FD is named by the encoder whose space it was measured in (FD-CLIP, FD-Inception = the FID of papers,
FD-DINOv2); the main tables are the first encoder's, further encoders get a side-by-side table and their own."""

from __future__ import annotations

from pathlib import Path

from jaxaug import evaluate, fsutil
from jaxaug.evaluate import GROUPS, markdown_table

_HEAD = ("images", "FD ↓", "KID ↓", "precision ↑", "recall ↑", "density ↑", "coverage ↑",
         "diversity ↑", "Vendi ↑", "own class ↑", "copies ↓")
_EMBEDDED_BY = {"clip": "the CLIP image tower of `{model}`",
                "inception": "the FID Inception-v3's pool3 features, resized as clean-fid's clean mode",
                "dinov2": "DINOv2's CLS token, resized and normalised as dgm-eval"}
_WHAT_FD_IS = {"inception": "FD-Inception is the FID papers report (clean-fid's network and resize)",
               "dinov2": "FD-DINOv2 the modern one (Stein et al. 2023)",
               "clip": "FD-CLIP is measured in the space the unCLIP generator was conditioned to match, so it "
                       "flatters conditioned generation"}


def label(scores: dict) -> str:
  """The first encoder's label (CLIP for a report written before there were other encoders)."""
  return scores["about"].get("encoders", [{"label": "CLIP"}])[0]["label"]


def _head(name: str) -> tuple[str, ...]:
  return (_HEAD[0], f"FD-{name} ↓") + _HEAD[2:]


def _num(value, fmt: str = "{:.3g}") -> str:
  return "–" if value is None else fmt.format(value)


def _kid(row: dict) -> str:
  """KID ± its standard error (ours), then the subsets' standard deviation (torch-fidelity's and torchmetrics' ±)."""
  if row.get("kid") is None:
    return "–"
  return f"{row['kid']:.3g} ± {row['kid_se']:.2g} (sd {row['kid_std']:.2g})"


def _prdc(row: dict) -> list[str]:
  if row.get("prdc_skipped"):
    return ["skip"] * 4
  return [_num(row.get(k), "{:.3f}") for k in ("precision", "recall", "density", "coverage")]


def _cells(row: dict) -> list[str]:
  return ([f"{row['n_synthetic']:,}", _num(row.get("fd")), _kid(row)] + _prdc(row)
          + [_num(row.get("diversity"), "{:.3f}"), _num(row.get("vendi"), "{:.2f}"),
             _num(row.get("consistency"), "{:.1%}"), _num(row.get("copy_share"), "{:.1%}")])


def markdown(scores: dict, max_classes: int = 30) -> str:
  """The report: methods table, groups (long-tail sets), copy check, the classes (worst first when many)."""
  about, settings = scores["about"], scores["settings"]
  k, fd = settings["k"], f"FD-{label(scores)}"
  encoder = about.get("encoder", "clip")
  lines = [f"# Scores of `{about['synthetic']}`", "",
           f"{about['synthetic_images']:,} synthetic images ({about['units_done']} of {about['units']} units) against "
           f"{about['real_images']:,} real images of `{about['real']}` ({about['split']}), embedded by "
           f"{_EMBEDDED_BY[encoder].format(model=about['model'])} (d = {about['dim']}).", ""]
  lines += _methods_table(scores, label(scores))
  lines += ["", f"{fd} and KID: how far the synthetic images' embeddings lie from the real ones. KID is shown ± the "
            "standard error of the whole-set estimate (ours), then (sd) the standard deviation over its subsets, the ± "
            "that torch-fidelity and torchmetrics print. Precision and density: fidelity; recall and coverage: how "
            f"much of the real set is covered (Naeem et al. 2020 as its reference code computes them, k = {k}; pooled "
            f"rows use at most {settings['prdc_max']:,} images of each set). "
            "Diversity: mean pairwise cosine distance within a class, averaged over classes; Vendi: the effective "
            "number of distinct images per class (it grows with the images per class, so compare it between methods "
            "of equal size). Own class: share of synthetic images whose "
            f"{settings.get('consistency_k', 5)} nearest real images (cosine) vote for their own class (real images: "
            "each voted on by the others, the encoder's own class separation). Copies: share "
            "of synthetic images whose nearest real image of their class is their own source, at cosine similarity ≥ "
            f"{settings['copy_threshold']}."]
  lines += _encoder_lines(scores)
  if scores["groups"]:
    lines += ["", "## Many / medium / few", "",
              "Classes by their real images: many > 100, medium 20-100, few < 20.", ""]
    group_rows = []
    for g in GROUPS:
      if g not in scores["groups"]:
        continue
      group_rows.append([f"**{g}** ({scores['groups'][g]['classes']} classes)", "all"] + _cells(scores["groups"][g]))
      group_rows += [[g, name] + _cells(row["groups"][g]) for name, row in scores["methods"].items()]
    lines += markdown_table(("group", "method") + _head(label(scores)), group_rows, text_columns=2)
  if "keep" in scores:
    kept = scores["keep"]
    lines += ["", "## Keep list", "", f"`{kept['file']}`: rule {kept['rule']} on {kept['encoder']} votes of the "
              f"{kept['k']} nearest real images; kept {kept['kept']:,} of {kept['images']:,} images, dropped "
              f"{kept['dropped']:,} ({kept['unreadable']:,} of them unreadable). Train on it with "
              f"`python -m jaxaug.train --config.synthetic_keep={kept['file']}`."]
  lines += ["", "## Copy check", ""] + _copy_lines(scores["copies"])
  lines += ["", "## Classes", ""] + _class_lines(scores, max_classes)
  timing = scores.get("timing", {})
  if timing:
    lines += ["", f"Embedding {timing.get('embed_s', 0):.1f} s ({timing.get('embedded_images', 0):,} images newly "
              f"embedded), metrics {timing['metrics_s']:.1f} s ({timing['per_class_s'] * 1e3:.1f} ms per class)."]
  return "\n".join(lines) + "\n"


def _methods_table(scores: dict, name: str) -> list[str]:
  """One row per method, all methods first, the real images' own diversity last; FD named by the encoder."""
  rows = [["**all**"] + _cells(scores["overall"])]
  rows += [[method] + _cells(row) for method, row in scores["methods"].items()]
  real = scores["real"]
  rows.append(["*real images*", f"{real['n_real']:,}"] + ["–"] * 6 + [_num(real["diversity"], "{:.3f}"),
                                                                     _num(real["vendi"], "{:.2f}"),
                                                                     _num(real.get("consistency"), "{:.1%}"), "–"])
  return markdown_table(("method",) + _head(name), rows)


def _encoder_lines(scores: dict) -> list[str]:
  """With more than one encoder: FD, KID, precision and coverage of each side by side, then each further
  encoder's own methods table."""
  others = scores.get("by_encoder", {})
  if not others:
    return []
  spaces = [(label(scores), scores)] + [(o["label"], o) for o in others.values()]
  head = ("method",) + tuple(f"{metric}-{name}" for name, _ in spaces
                             for metric in ("FD", "KID", "precision", "coverage"))

  def cells(rows: list[dict]) -> list[str]:
    return [c for row in rows for c in (_num(row.get("fd")), _kid(row), *_prdc(row)[::3])]

  table = [["**all**"] + cells([sp["overall"] for _, sp in spaces])]
  table += [[m] + cells([sp["methods"][m] for _, sp in spaces]) for m in scores["methods"]]
  present = [scores["about"].get("encoder", "clip")] + list(others)
  lines = ["", "## Encoders side by side", "",
           "The same images in each encoder's space. " + "; ".join(_WHAT_FD_IS[n] for n in _WHAT_FD_IS if n in present)
           + ".", ""]
  lines += markdown_table(head, table)
  for name, other in others.items():
    lines += ["", f"### {other['label']} (d = {other['dim']})", ""] + _methods_table(other, other["label"])
  return lines


def _copy_lines(copies: dict) -> list[str]:
  if not copies["checked"]:
    return ["No synthetic image's source is in the real set (another real set than the one it was generated from?): "
            "nothing to check."]
  sims = copies["source_similarity"]
  lines = [f"{copies['checked']:,} images checked: for {copies['nearest_is_source_share']:.1%} the nearest real "
           f"image is their own source; {copies['share']:.1%} are that and at cosine similarity ≥ "
           f"{copies['threshold']} (copies). Similarity to the own source: median {sims['median']:.3f}, 90th percentile {sims['p90']:.3f}, "
           f"99th {sims['p99']:.3f}, max {sims['max']:.3f}."]
  if copies["sources_not_in_real_set"]:
    lines.append(f"{copies['sources_not_in_real_set']:,} images have no source in the real set and are not checked.")
  lines += ["", "Images by cosine similarity to their own source (bins of 0.05 from 0.5 up):", ""] + _histogram(sims)
  lines += ["", "Most similar to their source:", ""]
  lines += markdown_table(("item", "class", "method", "similarity", "nearest is source"),
                  [[str(r["item_id"]), r["class"], r["method"], f"{r['similarity_to_source']:.3f}",
                    "yes" if r["nearest_is_source"] else "no"] for r in copies["most_similar"][:5]], text_columns=3)
  return lines


def _histogram(sims: dict) -> list[str]:
  """The similarity histogram from 0.5 up (lower bins summed into one), split by nearest-is-source."""
  edges, hist = sims["histogram"]["edges"], sims["histogram"]
  first = next(i for i, e in enumerate(edges) if e >= 0.5)
  head = ("", "< 0.5") + tuple(f"{e:.2f}" for e in edges[first:-1])

  def counts(key):
    return [str(sum(hist[key][:first]))] + [str(v) for v in hist[key][first:]]

  return markdown_table(head, [["nearest real is the source"] + counts("nearest_is_source"),
                              ["another"] + counts("other")])


def _class_lines(scores: dict, max_classes: int) -> list[str]:
  classes = scores["classes"]
  k = scores["settings"]["k"]
  shown = classes
  lines = []
  if len(classes) > max_classes:
    ranked = sorted(classes, key=lambda r: (r["fd"] is None, -(r["fd"] or 0)))
    shown = ranked[:max_classes]
    lines += [f"The {max_classes} of {len(classes)} classes with the highest FD-{label(scores)} (every class is "
              "in scores.json).", ""]
  head = ("class", "real", "synthetic", f"FD-{label(scores)}", "KID", "precision", "recall", "density", "coverage",
          "diversity", "real diversity", "own class", "copies")
  rows = [[r["name"], f"{r['n_real']:,}", f"{r['n_synthetic']:,}", _num(r["fd"]), _kid(r)] + _prdc(r)
          + [_num(r["diversity"], "{:.3f}"), _num(r["real_diversity"], "{:.3f}"), _num(r.get("consistency"), "{:.1%}"),
             _num(r["copy_share"], "{:.1%}")]
          for r in shown]
  lines += markdown_table(head, rows)
  methods = list(scores["methods"])
  if len(methods) > 1:
    lines += ["", "Own class per method (share of a class's images of that method whose nearest real images vote for "
              "their own class):", ""]
    lines += markdown_table(("class",) + tuple(methods),
                            [[r["name"]] + [_num(r["methods"][m].get("consistency"), "{:.1%}") for m in methods]
                             for r in shown])
  skipped = scores["prdc_skipped_classes"]
  if skipped:
    names = ", ".join(skipped[:10]) + (f" and {len(skipped) - 10} more" if len(skipped) > 10 else "")
    lines += ["", f"skip: PRDC needs k+1 = {k + 1} real and {k + 1} synthetic images in a class; skipped for "
              f"{len(skipped)} class(es): {names}."]
  return lines


def summary(scores: dict, paths: list[Path]) -> str:
  """The terminal's lines: what was scored and how long it took, the overall row of each encoder, where the report
  and the keep list are."""
  about, timing = scores["about"], scores["timing"]
  lines = [f"scored {about['synthetic_images']} synthetic images ({len(about['methods'])} method(s)) against "
           f"{about['real_images']} real images in {timing['total_s']:.1f}s (embedding {timing['embed_s']:.1f}s for "
           f"{timing['embedded_images']} new images, metrics {timing['metrics_s']:.1f}s)",
           "overall: " + _overall(scores, label(scores))]
  lines += [f"  in {o['label']}: " + _overall(o, o["label"]) for o in scores.get("by_encoder", {}).values()]
  lines.append(f"scores: {paths[1]}  ({', '.join(p.name for p in paths if p != paths[1])})")
  if "keep" in scores:
    kept = scores["keep"]
    lines.append(f"keep list: {kept['file']} ({kept['rule']}, {kept['encoder']} votes of k = {kept['k']}): kept "
                 f"{kept['kept']} of {kept['images']} images, dropped {kept['dropped']}")
  return "\n".join(lines)


def _overall(scores: dict, name: str) -> str:
  """One encoder's overall row in words: FD-<name>, KID, PRDC, diversity against the real images', own class,
  copies."""
  o = scores["overall"]
  kid = "–" if o["kid"] is None else (f"{_num(o['kid'])} (standard error {o['kid_se']:.2g}; subset sd {o['kid_std']:.2g}, "
                                      "as torch-fidelity prints)")
  return (f"FD-{name} {_num(o['fd'], '{:.4g}')}, KID {kid}, precision {_num(o['precision'], '{:.3f}')}, recall "
          f"{_num(o['recall'], '{:.3f}')}, density {_num(o['density'], '{:.3f}')}, coverage "
          f"{_num(o['coverage'], '{:.3f}')}, diversity {_num(o['diversity'], '{:.3f}')} (real "
          f"{_num(scores['real']['diversity'], '{:.3f}')}), own class {_num(o.get('consistency'), '{:.1%}')}, copies "
          f"{_num(o['copy_share'], '{:.1%}')}")


def write(out: Path, scores: dict) -> tuple[Path, Path]:
  """scores.json and scores.md, each written atomically."""
  json_path, md_path = out / "scores.json", out / "scores.md"
  evaluate.write_json(str(json_path), scores)
  fsutil.atomic_write_text(md_path, markdown(scores))
  return json_path, md_path
