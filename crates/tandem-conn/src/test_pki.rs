//! A certificate authority made at run time, for tests of TLS (feature
//! `test-pki`, dev-dependencies only): a CA, and leaf certificates it
//! issues with a chosen serial, names and validity, written as PEM files.
//! Keys are ECDSA P-256 made by rcgen with ring's random numbers.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SerialNumber,
};

/// A certificate authority.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    /// The CA certificate, PEM.
    pub pem: String,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca").finish_non_exhaustive()
    }
}

/// What a leaf certificate is made with.
#[derive(Debug, Clone)]
pub struct Leaf {
    /// The subject's common name.
    pub cn: String,
    /// DNS names and IP addresses it is valid for.
    pub names: Vec<String>,
    pub serial: u64,
    /// Valid 2020-01-01 to 2021-01-01 instead of until 4096.
    pub expired: bool,
}

impl Leaf {
    /// A leaf for `localhost` and 127.0.0.1, valid now.
    pub fn new(cn: &str, serial: u64) -> Leaf {
        Leaf {
            cn: cn.into(),
            names: vec!["localhost".into(), "127.0.0.1".into()],
            serial,
            expired: false,
        }
    }
}

/// An issued certificate and its key.
#[derive(Debug, Clone)]
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
    pub der: Vec<u8>,
}

impl Issued {
    /// Writes `<stem>.crt` and `<stem>.key` in `dir`; returns their paths.
    pub fn write(&self, dir: &Path, stem: &str) -> (PathBuf, PathBuf) {
        let (c, k) = (
            dir.join(format!("{stem}.crt")),
            dir.join(format!("{stem}.key")),
        );
        std::fs::write(&c, &self.cert_pem).expect("write certificate");
        std::fs::write(&k, &self.key_pem).expect("write key");
        (c, k)
    }
}

impl Ca {
    /// A new CA named `name`.
    pub fn new(name: &str) -> Ca {
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, name);
        params.distinguished_name = dn;
        let cert = params.self_signed(&key).expect("CA certificate");
        Ca {
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// Writes the CA certificate as `<stem>.crt` in `dir`.
    pub fn write(&self, dir: &Path, stem: &str) -> PathBuf {
        let p = dir.join(format!("{stem}.crt"));
        std::fs::write(&p, &self.pem).expect("write CA certificate");
        p
    }

    /// Issues a leaf certificate usable by servers and clients.
    pub fn issue(&self, leaf: &Leaf) -> Issued {
        let key = KeyPair::generate().expect("leaf key");
        let mut params = CertificateParams::new(leaf.names.clone()).expect("leaf names");
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, leaf.cn.as_str());
        dn.push(DnType::OrganizationName, "tandem tests");
        params.distinguished_name = dn;
        params.serial_number = Some(SerialNumber::from(leaf.serial));
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        if leaf.expired {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("leaf certificate");
        Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().to_vec(),
        }
    }
}
