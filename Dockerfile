# syntax=docker/dockerfile:1
# Build: a static binary, no cgo.
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/incs-relay ./cmd/incs-relay \
 && /out/incs-relay check-config --config configs/demo.yaml

# Run: distroless static, non-root. The store lives on a volume; the config is
# a file, secrets come from the environment (${VAR} in the config).
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/incs-relay /usr/local/bin/incs-relay
COPY configs/example.yaml /etc/incs-relay/config.yaml
VOLUME ["/data"]
WORKDIR /data
USER nonroot:nonroot
EXPOSE 8086
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
  CMD ["/usr/local/bin/incs-relay", "health", "--addr", "127.0.0.1:8086"]
ENTRYPOINT ["/usr/local/bin/incs-relay"]
CMD ["run", "--config", "/etc/incs-relay/config.yaml"]
