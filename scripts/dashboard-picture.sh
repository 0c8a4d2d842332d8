#!/usr/bin/env bash
# Renders docs/screenshots/dashboard.png: every panel of docs/grafana-dashboard.json, its
# queries evaluated by a real Prometheus that scraped two real instances under load.
#
#   scripts/dashboard-picture.sh [SECONDS]     (default 90 s of load; about 3 minutes)
#
# Starts a private Redis, two chatroom instances on it, and Prometheus (Debian's
# package, installed if missing) scraping both every second, all on spare loopback ports;
# runs chatroom-bench against them (fan-out to 500 sockets, publishing, a few refusals and
# moderation actions); then asks Prometheus for each panel's queries over the run and
# draws them in the dashboard's layout with matplotlib (PyPI). A query Prometheus refuses
# fails the script: the picture doubles as a check of the dashboard's PromQL.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

seconds=${1:-90}
ensure_swift
ensure_build_packages redis-server redis-tools prometheus curl
python3 -c 'import matplotlib' 2>/dev/null || pip install --quiet matplotlib

# CHATROOM_BIN_DIR: a folder that holds chatroom and chatroom-bench already built.
if [ -n "${CHATROOM_BIN_DIR:-}" ]; then
  bin=$CHATROOM_BIN_DIR
else
  swift build -c release --product chatroom >/dev/null
  swift build -c release --product chatroom-bench >/dev/null
  bin=$(swift build -c release --show-bin-path)
fi
work=$(mktemp -d "${TMPDIR:-/tmp}/chatroom-dashboard.XXXXXX")
trap stop_started EXIT
start_bench_redis "$work"
admin="dashboard-admin-token-0123456789"

ports=()
for name in a b; do
  port=$(free_port)
  "$bin/chatroom" --port "$port" --redis-url "redis://127.0.0.1:$redis_port" --admin-token "$admin" "${load_test_flags[@]}" \
    --log-level warning >"$work/$name.log" 2>&1 &
  started_pids+=($!)
  wait_port "$port"
  ports+=("$port")
done
say "instances on ${ports[*]}, Redis on $redis_port"

prometheus_port=$(free_port)
cat >"$work/prometheus.yml" <<EOF
global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: chatroom
    static_configs:
      - targets: ['127.0.0.1:${ports[0]}', '127.0.0.1:${ports[1]}']
EOF
prometheus --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/tsdb" \
  --web.listen-address="127.0.0.1:$prometheus_port" >"$work/prometheus.log" 2>&1 &
started_pids+=($!)
wait_port "$prometheus_port"
started=$(date +%s)

say "load for $seconds s"
# Fan-out on instance a; POST /send/ bursts on both; refusals; moderation.
"$bin/chatroom-bench" fanout --port "${ports[0]}" --subscribers 500 --channels 5 --messages $((seconds * 100)) \
  --rate 100 --publishers 2 >"$work/fanout.log" 2>&1 &
fanout=$!
started_pids+=($fanout)
end=$((started + seconds))
round=0
while [ "$(date +%s)" -lt "$end" ] && [ "$round" -lt 1000 ]; do
  round=$((round + 1))
  "$bin/chatroom-bench" publish --port "${ports[round % 2]}" --publishers 4 --seconds 3 --subscribers 0 >/dev/null 2>&1 || true
  for _ in 1 2 3; do
    curl -s -o /dev/null -d 'channel=bad%20name&data=x' "http://127.0.0.1:${ports[0]}/send/" || true
    curl -s -o /dev/null "http://127.0.0.1:${ports[1]}/history?channel=c&since=x" || true
    curl -s -o /dev/null -H 'Idempotency-Key: not a key!' -d "channel=c&data=x" "http://127.0.0.1:${ports[1]}/send/" || true
  done
  curl -s -o /dev/null -H "Authorization: Bearer $admin" -d "channel=room&user=AAAAAAAAAAAAAA$((round % 10))&seconds=60" "http://127.0.0.1:${ports[0]}/api/mute" || true
  sleep 2
done
sleep 3

say "rendering the panels"
python3 - "$prometheus_port" "$started" "$(date +%s)" docs/grafana-dashboard.json docs/screenshots/dashboard.png <<'PY'
import json, sys, urllib.parse, urllib.request
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt

port, start, end, source, target = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
dashboard = json.load(open(source))

def query(expr):
    expr = expr.replace('instance=~"$instance"', 'instance=~".*"')
    url = f"http://127.0.0.1:{port}/api/v1/query_range?" + urllib.parse.urlencode({"query": expr, "start": start, "end": end, "step": 2})
    answer = json.load(urllib.request.urlopen(url))
    if answer.get("status") != "success":
        raise SystemExit(f"Prometheus refused {expr}: {answer}")
    return answer["data"]["result"]

def legend(template, labels):
    out = template or ""
    for key, value in labels.items():
        out = out.replace("{{" + key + "}}", value)
    return out or ",".join(f"{k}={v}" for k, v in labels.items() if k != "__name__") or "value"

rows = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in dashboard["panels"])
figure = plt.figure(figsize=(18, rows * 0.5), dpi=90)
figure.patch.set_facecolor("#111217")
for panel in dashboard["panels"]:
    g = panel["gridPos"]
    ax = figure.add_axes([g["x"] / 24 + 0.03, 1 - (g["y"] + g["h"]) / rows + 0.03, g["w"] / 24 - 0.036, g["h"] / rows - 0.05])
    ax.set_facecolor("#181b1f")
    for spine in ax.spines.values():
        spine.set_color("#2c3235")
    ax.tick_params(colors="#9fa7b3", labelsize=7)
    ax.set_title(panel["title"], color="#d8d9da", fontsize=9, loc="left")
    unit = panel["fieldConfig"]["defaults"].get("unit", "")
    series = []
    for target_ in panel["targets"]:
        for result in query(target_["expr"]):
            values = [(float(t) - start, float(v)) for t, v in result["values"] if v not in ("NaN", "+Inf", "-Inf")]
            if values:
                series.append((legend(target_.get("legendFormat"), result["metric"]), values))
    if panel["type"] == "stat":
        ax.set_xticks([]); ax.set_yticks([])
        last = series[0][1][-1][1] if series else 0.0
        text = f"{last * 1000:.2f} ms" if unit == "s" else (f"{last:,.0f}/s" if unit == "ops" else f"{last:,.0f}")
        ax.text(0.5, 0.45, text, color="#73bf69", fontsize=20, ha="center", va="center", transform=ax.transAxes)
        if series:
            xs, ys = zip(*series[0][1]); ax2 = ax.twinx(); ax2.plot(xs, ys, color="#73bf69", alpha=0.35, linewidth=1); ax2.axis("off")
        continue
    scale, suffix = (1000, " ms") if unit == "s" else (1, "")
    for name, values in series[:8]:
        xs, ys = zip(*values)
        ax.plot(xs, [y * scale for y in ys], linewidth=1.2, label=name[:48])
    ax.set_xlabel("seconds into the run", color="#9fa7b3", fontsize=7)
    if suffix: ax.set_ylabel(suffix.strip(), color="#9fa7b3", fontsize=7)
    if series:
        ax.legend(fontsize=6, loc="upper left", facecolor="#181b1f", edgecolor="#2c3235", labelcolor="#d8d9da", ncol=2)
    else:
        ax.text(0.5, 0.5, "no data (nothing of this kind happened)", color="#9fa7b3", fontsize=8, ha="center", transform=ax.transAxes)
figure.savefig(target, facecolor=figure.get_facecolor())
print(f"wrote {target}")
PY
say "docs/screenshots/dashboard.png: docs/grafana-dashboard.json over $seconds s of load"
kill "$fanout" 2>/dev/null || true
