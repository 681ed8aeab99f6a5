# Fan-out: NRUNS independent runs of the trivial launch.sh (config: nruns, launch).
NRUNS = int(config.get("nruns", 100))
LAUNCH = config["launch"]

rule all:
    input: expand("done/{i}", i=range(NRUNS))

rule run:
    output: "done/{i}"
    shell: "bash {LAUNCH} && touch {output}"
