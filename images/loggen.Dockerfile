# loggen: the project's deterministic log generator (tests, benchmarks and the demo's pods).
# Writes to stdout/stderr only, so it runs unprivileged.
FROM scratch
COPY loggen /loggen
USER 65532:65532
ENTRYPOINT ["/loggen"]
