# sluice-collector: the DaemonSet's log shipper. Context: a directory holding the static binary
# (scripts/images.sh builds it with -C target-feature=+crt-static), so nothing is pulled.
#
# Runs as root (uid 0), and that is deliberate: it reads the logs of every pod on its node,
# /var/log/pods/<ns>_<pod>_<uid>/<container>/N.log (written by containerd as root, mode 0640)
# and Docker's /var/lib/docker/containers/<id>/<id>-json.log (root, 0640), and it writes its
# checkpoints to the hostPath /var/lib/sluice (root-owned on the node). As the files' owner, uid 0
# needs no capability for that, so a pod spec can drop ALL capabilities and mount the log
# directories and the root filesystem read-only. (A non-root collector would need
# CAP_DAC_READ_SEARCH to read the logs plus a writable checkpoint directory of its own.)
FROM scratch
COPY sluice-collector /sluice-collector
USER 0:0
ENTRYPOINT ["/sluice-collector"]
