# Hop latency: HOPS dependent runs of the trivial launch.sh; each output holds
# the time its run ended (config: hops, launch).
HOPS = int(config.get("hops", 10))
LAUNCH = config["launch"]

rule all:
    input: f"hop/{HOPS - 1}"

rule hop:
    input: lambda w: [f"hop/{int(w.i) - 1}"] if int(w.i) > 0 else []
    output: "hop/{i}"
    shell: "bash {LAUNCH} && date +%s.%N > {output}"
