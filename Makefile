# hanul: `make run` starts the whole system locally; `make test` checks it all.
.PHONY: run test bench load coldstart venv clean

run:
	cargo run --release -p hanul-local

test:
	infra/scripts/test.sh

bench:
	cargo bench -p hanul-shared --bench ids --bench ratelimit --bench notify

load:
	infra/scripts/load.sh

coldstart:
	infra/scripts/coldstart.sh

venv:
	infra/scripts/venv.sh

clean:
	infra/scripts/moto.sh stop
	rm -rf .aws-sam .build
	cargo clean
