# Toxiproxy from the static toxiproxy-server that `make tools` builds (CGO_ENABLED=0): no base
# image, so it builds with no registry at all. Same layout as the official image (/toxiproxy,
# API on 8474), so the harness runs either the same way (HARNESS_TOXIPROXY_IMAGE selects one).
FROM scratch
COPY toxiproxy-server /toxiproxy
EXPOSE 8474
ENTRYPOINT ["/toxiproxy"]
CMD ["-host=0.0.0.0"]
