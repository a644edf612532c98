#!/bin/sh
# tls_certs.sh DIR -- a throw-away test CA and server certificates, made with
# openssl in DIR (which must exist) for the TLS tests and the HTTP bench:
#
#   ca.pem                the test CA (the only thing a client trusts)
#   capath/               ca.pem hashed by `openssl rehash` (for ca_path)
#   good.pem, good.key    127.0.0.1 and localhost, valid for a day
#   wronghost.pem, .key   valid, signed by the CA, but for wrong.invalid only
#   expired.pem, .key     127.0.0.1 and localhost, expired in 2020
#   other-ca.pem          a second CA that signed none of these
#
# Keys are EC P-256: a few milliseconds each, so a test can afford a new CA
# every run rather than a checked-in one (which would expire). The expired
# certificate needs `openssl ca`, the only openssl 3.0 command that takes a
# start date in the past.
set -eu

dir=${1:?usage: tls_certs.sh DIR}
cd "$dir"

key() {
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null
}

ca() { # NAME: a self-signed CA certificate NAME.pem with its key NAME.key
    key "$1.key"
    openssl req -x509 -new -key "$1.key" -out "$1.pem" -days 2 -subj "/CN=Loom test CA $1" \
        -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign
}

ca ca
ca other-ca

cat > ca.cnf <<'EOF'
[ca]
default_ca = test_ca
[test_ca]
dir = .
database = index.txt
serial = serial
new_certs_dir = issued
certificate = ca.pem
private_key = ca.key
default_md = sha256
policy = any
copy_extensions = copy
unique_subject = no
[any]
commonName = supplied
EOF
: > index.txt
echo 1000 > serial
mkdir -p issued

# NAME SAN [CA-ARGS...]: NAME.pem and NAME.key for SAN, signed by the CA
leaf() {
    name=$1 san=$2
    shift 2
    key "$name.key"
    openssl req -new -key "$name.key" -out "$name.csr" -subj "/CN=$name" \
        -addext "subjectAltName=$san" -addext extendedKeyUsage=serverAuth
    openssl ca -batch -config ca.cnf -in "$name.csr" -out "$name.pem" -notext "$@" 2>/dev/null
}

leaf good "IP:127.0.0.1,DNS:localhost" -days 1
leaf wronghost "DNS:wrong.invalid" -days 1
leaf expired "IP:127.0.0.1,DNS:localhost" -startdate 20200101000000Z -enddate 20200201000000Z

mkdir -p capath
cp ca.pem capath/ca.pem
openssl rehash capath 2>/dev/null || c_rehash capath >/dev/null
