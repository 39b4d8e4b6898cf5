# The laketide binary in a slim runtime image. Not built on the development machines (they
# have no Docker engine); checked with hadolint. Build:  docker build -t laketide .
# Run:  docker run --rm laketide run examples/clickstream.sql
#       (your own pipeline: -v "$PWD:/work" -w /work laketide run pipeline.sql)

FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
# The commit for `laketide --version` (the build context has no .git).
ARG LAKETIDE_GIT_COMMIT=unknown
ENV LAKETIDE_GIT_COMMIT=${LAKETIDE_GIT_COMMIT}
COPY Cargo.toml Cargo.lock build.rs ./
COPY crates ./crates
COPY src ./src
COPY examples ./examples
RUN cargo build --release --locked --bin laketide

FROM debian:bookworm-slim
# ca-certificates is left unpinned on purpose: it must follow Debian's security updates.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*
RUN useradd --create-home --uid 10001 laketide \
    && mkdir /opt/laketide && chown 10001:10001 /opt/laketide
COPY --from=build /src/target/release/laketide /usr/local/bin/laketide
# The examples, writable by the user: pipelines keep their state and local lakes beside them.
COPY --from=build --chown=10001:10001 /src/examples /opt/laketide/examples
USER 10001
WORKDIR /opt/laketide
ENTRYPOINT ["laketide"]
CMD ["--help"]
