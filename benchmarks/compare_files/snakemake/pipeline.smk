# The example pipeline mult → add → norm → mult, one branch per coefficient,
# each stage a small Python script (the same arithmetic as studies/*/doIt.py).
HERE = workflow.basedir
COEFFICIENTS = [0.342, -2.31]

rule all:
    input: expand("remult/{b}.json", b=range(len(COEFFICIENTS)))

rule mult:
    output: "mult/{b}.json"
    params: a=lambda w: COEFFICIENTS[int(w.b)]
    shell: "python {HERE}/mult.py {params.a} '[1.0, 2.0, 3.0]' {output}"

rule add:
    input: "mult/{b}.json"
    output: "add/{b}.json"
    shell: "python {HERE}/add.py 0.56 {input} {output}"

rule norm:
    input: "add/{b}.json"
    output: "norm/{b}.json"
    shell: "python {HERE}/norm.py {input} {output}"

rule remult:
    input: "norm/{b}.json"
    output: "remult/{b}.json"
    shell: "python {HERE}/mult.py 2.0 {input} {output}"
