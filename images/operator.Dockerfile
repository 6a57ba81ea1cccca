# sluice-operator: reconciles LogDrains and LogBindings into per-node collector configs. It only
# talks to the apiserver, so it runs as an unprivileged user (65532, "nonroot" by convention).
# Context: a directory holding the static binary built by scripts/images.sh.
FROM scratch
COPY sluice-operator /sluice-operator
USER 65532:65532
ENTRYPOINT ["/sluice-operator"]
