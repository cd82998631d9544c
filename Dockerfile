# slimgate: a fully static (musl) binary on distroless `static`, as the
# non-root user, with the embedded store on a volume.
#
#   docker build -t slimgate .
#   docker run --rm -p 8080:8080 -v slimgate-state:/var/lib/slimgate slimgate \
#     --oidc-issuer http://keycloak.keycloak.svc.cluster.local/realms/openshell
#
# The build stage runs the same commands as `.ci/run`'s "static release
# binary" step (tests/deploy.rs checks that they match), so CI builds the
# binary this image ships. The image is the `tls` build: it can serve TLS
# (--tls-cert) and fetch https:// issuers; without TLS flags it serves
# plaintext, as the default build does.
#
# The root filesystem can be mounted read-only: the gateway writes only its
# store (/var/lib/slimgate, a volume) and its Unix sockets (a volume of
# their own, see deploy/kubernetes/).

FROM docker.io/library/rust:1.95-bookworm AS build
RUN apt-get update -qq && apt-get install -y -qq --no-install-recommends musl-tools
RUN rustup target add x86_64-unknown-linux-musl
WORKDIR /src
COPY . .
RUN CC_x86_64_unknown_linux_musl=musl-gcc cargo build --release --locked --target x86_64-unknown-linux-musl --features tls
# The store directory, owned by distroless' nonroot user (65532).
RUN mkdir -p /out/var/lib/slimgate \
 && cp target/x86_64-unknown-linux-musl/release/slimgate /out/slimgate

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/slimgate /usr/local/bin/slimgate
COPY --from=build --chown=65532:65532 /out/var/lib/slimgate /var/lib/slimgate
USER 65532:65532
ENV OPENSHELL_BIND_ADDRESS=0.0.0.0 \
    OPENSHELL_DB_URL=redb:/var/lib/slimgate/state.redb
VOLUME ["/var/lib/slimgate"]
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/slimgate"]
