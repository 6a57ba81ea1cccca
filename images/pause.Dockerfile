# pause: the pod sandbox image of the test node (containerd's sandbox_image), from the project's
# own static binary (tests/pause), so the node needs no registry. 65535 is upstream pause's user.
FROM scratch
COPY pause /pause
USER 65535:65535
ENTRYPOINT ["/pause"]
