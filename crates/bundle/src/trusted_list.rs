//! ETSI TS 119 612 trusted lists, read for one purpose: which Time-Stamp Authorities are *qualified*. A TSP service
//! whose `ServiceTypeIdentifier` is [`QTST`] and whose current `ServiceStatus` is [`GRANTED`] makes the tokens that
//! chain to one of its `X509Certificate`s qualified electronic time stamps (eIDAS art. 42).
//!
//! What is deliberately not done: the list's own XML signature is not checked (the reader vouches for the file, as
//! for a `--tsa-anchor`), and a service's history (`ServiceHistory`) is not read, so the status is the list's current
//! one, not the one at the token's genTime.
//!
//! Outside input with a budget: at most [`MAX_TRUSTED_LIST_BYTES`], no DTD, a bound on the nodes and on the depth of
//! nesting, and every refusal is a [`TrustedListError`]; nothing panics.

use base64::Engine as _;

/// The service type of a qualified time-stamping service.
pub const QTST: &str = "http://uri.etsi.org/TrstSvc/Svctype/TSA/QTST";
/// The status of a service the supervisory body granted, and has not withdrawn.
pub const GRANTED: &str = "http://uri.etsi.org/TrstSvc/TrustedList/Svcstatus/granted";

/// The largest trusted list read: national lists are a few MiB at most.
pub const MAX_TRUSTED_LIST_BYTES: usize = 16 << 20;
/// The most XML nodes a list may have (elements, text, attributes' parents...).
const MAX_NODES: u32 = 2_000_000;
/// The deepest nesting of elements in a list: TS 119 612 needs about ten.
const MAX_DEPTH: usize = 64;

/// Why a trusted list was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TrustedListError {
    #[error("it is {len} bytes; a trusted list is read up to {MAX_TRUSTED_LIST_BYTES} bytes")]
    TooLarge { len: usize },
    #[error("it is not UTF-8 text")]
    NotText(#[source] std::str::Utf8Error),
    #[error("it is not well-formed XML (or has a DTD, or more than {MAX_NODES} nodes)")]
    NotXml(#[source] roxmltree::Error),
    #[error("its elements nest more than {MAX_DEPTH} deep, which no trusted list does")]
    TooDeep,
    #[error("its root element is <{found}>, not an ETSI TS 119 612 <TrustServiceStatusList>")]
    NotATrustedList { found: String },
    #[error("service {service:?} has an X509Certificate that is not base64")]
    Certificate { service: String },
}

/// One TSP service of a list, as far as trusted time needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustedService {
    /// The service's name (its first `ServiceName/Name`), or the provider's.
    pub name: String,
    /// `ServiceTypeIdentifier`.
    pub service_type: String,
    /// The current `ServiceStatus`.
    pub status: String,
    /// The service's certificates (DER), from its `ServiceDigitalIdentity`.
    pub certificates: Vec<Vec<u8>>,
}

impl TrustedService {
    /// Whether tokens chaining to this service's certificates are qualified: a QTST service, granted.
    pub fn is_granted_qtst(&self) -> bool {
        self.service_type == QTST && self.status == GRANTED
    }

    /// Whether this is a time-stamping service at all (qualified or not).
    pub fn is_qtst(&self) -> bool {
        self.service_type == QTST
    }

    /// The last part of the status URI (`granted`, `withdrawn`, ...), for reports.
    pub fn status_word(&self) -> &str {
        self.status.rsplit('/').next().unwrap_or(&self.status)
    }
}

/// A trusted list: its territory and its services.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustedList {
    /// `SchemeTerritory` (a country code, or `EU`), if given.
    pub territory: Option<String>,
    pub services: Vec<TrustedService>,
}

/// The first descendant element of `node` named `name` (namespace ignored), by a path of local names.
fn child<'a, 'input>(node: roxmltree::Node<'a, 'input>, name: &str) -> Option<roxmltree::Node<'a, 'input>> {
    node.children().find(|child| child.is_element() && child.tag_name().name() == name)
}

fn path<'a, 'input>(node: roxmltree::Node<'a, 'input>, names: &[&str]) -> Option<roxmltree::Node<'a, 'input>> {
    names.iter().try_fold(node, |node, name| child(node, name))
}

fn text_of(node: Option<roxmltree::Node<'_, '_>>) -> Option<String> {
    node.and_then(|node| node.text()).map(|text| text.trim().to_owned())
}

/// How deep the elements of `xml` nest at most, in one pass with no recursion: start tags (not self-closing) open,
/// end tags close; comments, CDATA, processing instructions and declarations are skipped, and a quoted attribute
/// value may hold `>`. Malformed XML gets some number, and the parser refuses it afterwards.
fn nesting(xml: &[u8]) -> usize {
    let find = |from: usize, needle: &[u8]| {
        xml.get(from..)
            .and_then(|rest| rest.windows(needle.len()).position(|w| w == needle))
            .map_or(xml.len(), |at| from + at + needle.len())
    };
    let (mut at, mut depth, mut deepest) = (0, 0usize, 0usize);
    while let Some(open) = xml.get(at..).and_then(|rest| rest.iter().position(|&b| b == b'<')).map(|p| at + p) {
        let rest = &xml[open..];
        at = if rest.starts_with(b"<!--") {
            find(open + 4, b"-->")
        } else if rest.starts_with(b"<![CDATA[") {
            find(open + 9, b"]]>")
        } else if rest.starts_with(b"<?") {
            find(open + 2, b"?>")
        } else if rest.starts_with(b"<!") {
            find(open + 2, b">")
        } else {
            let mut quote = None;
            let mut end = open + 1;
            while let Some(&b) = xml.get(end) {
                match (quote, b) {
                    (None, b'"' | b'\'') => quote = Some(b),
                    (Some(q), _) if q == b => quote = None,
                    (None, b'>') => break,
                    _ => {}
                }
                end += 1;
            }
            if rest.starts_with(b"</") {
                depth = depth.saturating_sub(1);
            } else if end > 0 && xml.get(end - 1) != Some(&b'/') {
                depth += 1;
                deepest = deepest.max(depth);
            }
            end + 1
        };
    }
    deepest
}

impl TrustedList {
    /// Reads a trusted list's XML. Only what [`TrustedService`] holds is read; the signature is not checked.
    pub fn parse(bytes: &[u8]) -> Result<Self, TrustedListError> {
        if bytes.len() > MAX_TRUSTED_LIST_BYTES {
            return Err(TrustedListError::TooLarge { len: bytes.len() });
        }
        let text = std::str::from_utf8(bytes).map_err(TrustedListError::NotText)?;
        // roxmltree reads nested elements by recursion: the nesting is bounded before it reads a byte.
        if nesting(bytes) > MAX_DEPTH {
            return Err(TrustedListError::TooDeep);
        }
        let options = roxmltree::ParsingOptions { allow_dtd: false, nodes_limit: MAX_NODES };
        let document = roxmltree::Document::parse_with_options(text, options).map_err(TrustedListError::NotXml)?;
        let root = document.root_element();
        if root.tag_name().name() != "TrustServiceStatusList" {
            return Err(TrustedListError::NotATrustedList { found: crate::printable::echoed(root.tag_name().name()) });
        }
        let territory = text_of(path(root, &["SchemeInformation", "SchemeTerritory"]));
        let mut services = Vec::new();
        let providers = path(root, &["TrustServiceProviderList"]).into_iter().flat_map(|list| list.children());
        for provider in providers.filter(|node| node.is_element() && node.tag_name().name() == "TrustServiceProvider") {
            let provider_name = text_of(path(provider, &["TSPInformation", "TSPName", "Name"]));
            let listed = path(provider, &["TSPServices"]).into_iter().flat_map(|list| list.children());
            for service in listed.filter(|node| node.is_element() && node.tag_name().name() == "TSPService") {
                let Some(information) = child(service, "ServiceInformation") else { continue };
                let name = text_of(path(information, &["ServiceName", "Name"]))
                    .or_else(|| provider_name.clone())
                    .unwrap_or_else(|| "(unnamed service)".to_owned());
                let mut certificates = Vec::new();
                for identity in information.children().filter(|node| node.tag_name().name() == "ServiceDigitalIdentity")
                {
                    for id in identity.children().filter(|node| node.tag_name().name() == "DigitalId") {
                        let Some(base64) = text_of(child(id, "X509Certificate")) else { continue };
                        let base64: String = base64.split_whitespace().collect();
                        let der = base64::engine::general_purpose::STANDARD
                            .decode(base64)
                            .map_err(|_| TrustedListError::Certificate { service: crate::printable::echoed(&name) })?;
                        certificates.push(der);
                    }
                }
                services.push(TrustedService {
                    name,
                    service_type: text_of(child(information, "ServiceTypeIdentifier")).unwrap_or_default(),
                    status: text_of(child(information, "ServiceStatus")).unwrap_or_default(),
                    certificates,
                });
            }
        }
        Ok(Self { territory, services })
    }

    /// In words: `the trusted list of <territory>`.
    pub fn describe(&self) -> String {
        match &self.territory {
            Some(territory) => format!("the trusted list of {}", crate::printable::echoed(territory)),
            None => "the trusted list".to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A list with one service of `kind` and `status`, holding `certificate` (base64).
    pub(crate) fn list(kind: &str, status: &str, certificate: &str) -> String {
        format!(
            r#"<?xml version="1.0" encoding="UTF-8"?>
<tsl:TrustServiceStatusList xmlns:tsl="http://uri.etsi.org/02231/v2#" TSLTag="http://uri.etsi.org/19612/TSLTag">
  <tsl:SchemeInformation><tsl:SchemeTerritory>XX</tsl:SchemeTerritory></tsl:SchemeInformation>
  <tsl:TrustServiceProviderList><tsl:TrustServiceProvider>
    <tsl:TSPInformation><tsl:TSPName><tsl:Name xml:lang="en">Provider &amp; Co</tsl:Name></tsl:TSPName></tsl:TSPInformation>
    <tsl:TSPServices><tsl:TSPService>
      <tsl:ServiceInformation>
        <tsl:ServiceTypeIdentifier>{kind}</tsl:ServiceTypeIdentifier>
        <tsl:ServiceName><tsl:Name xml:lang="en">Test QTST</tsl:Name></tsl:ServiceName>
        <tsl:ServiceDigitalIdentity><tsl:DigitalId><tsl:X509Certificate>{certificate}</tsl:X509Certificate></tsl:DigitalId></tsl:ServiceDigitalIdentity>
        <tsl:ServiceStatus>{status}</tsl:ServiceStatus>
      </tsl:ServiceInformation>
      <tsl:ServiceHistory><tsl:ServiceHistoryInstance>
        <tsl:ServiceTypeIdentifier>{QTST}</tsl:ServiceTypeIdentifier>
        <tsl:ServiceStatus>{GRANTED}</tsl:ServiceStatus>
      </tsl:ServiceHistoryInstance></tsl:ServiceHistory>
    </tsl:TSPService></tsl:TSPServices>
  </tsl:TrustServiceProvider></tsl:TrustServiceProviderList>
</tsl:TrustServiceStatusList>"#
        )
    }

    #[test]
    fn a_granted_qtst_service_is_read_and_its_history_is_not() {
        let parsed = TrustedList::parse(list(QTST, GRANTED, "AQID\n BAU=").as_bytes()).unwrap();
        assert_eq!(parsed.territory.as_deref(), Some("XX"));
        let [service] = parsed.services.as_slice() else { panic!("{parsed:?}") };
        assert_eq!(service.name, "Test QTST");
        assert_eq!(service.certificates, [vec![1, 2, 3, 4, 5]]);
        assert!(service.is_granted_qtst());
        let withdrawn = "http://uri.etsi.org/TrstSvc/TrustedList/Svcstatus/withdrawn";
        let parsed = TrustedList::parse(list(QTST, withdrawn, "AQID").as_bytes()).unwrap();
        assert!(!parsed.services[0].is_granted_qtst(), "the history's granted status is not the current one");
        assert_eq!(parsed.services[0].status_word(), "withdrawn");
    }

    #[test]
    fn hostile_lists_are_refused_with_a_reason() {
        let refused = |bytes: &[u8], why: &str| {
            let err = TrustedList::parse(bytes).unwrap_err().to_string();
            assert!(err.contains(why), "{err}; expected {why}");
        };
        refused(&vec![b' '; MAX_TRUSTED_LIST_BYTES + 1], "a trusted list is read up to");
        refused(b"not xml at all", "not well-formed XML");
        refused(&[0xff, 0xfe, 0x00], "not UTF-8");
        let deep = format!("{}{}", "<a>".repeat(10_000), "</a>".repeat(10_000));
        refused(deep.as_bytes(), "nest more than 64 deep");
        refused(b"<html><body/></html>", "not an ETSI TS 119 612");
        let laughs = r#"<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;">]><TrustServiceStatusList>&b;</TrustServiceStatusList>"#;
        refused(laughs.as_bytes(), "not well-formed XML (or has a DTD");
        refused(list(QTST, GRANTED, "not base64!").as_bytes(), "not base64");
        // What only looks like nesting (in a comment, CDATA, an attribute value) does not count.
        let looks_deep = list(QTST, GRANTED, "AQID").replacen(
            "<tsl:SchemeInformation>",
            &format!(
                "<!-- {} --><![CDATA[{}]]><tsl:SchemeInformation Note=\"{}\">",
                "<a>".repeat(100),
                "<b>".repeat(100),
                "&gt;".repeat(100)
            ),
            1,
        );
        assert_eq!(TrustedList::parse(looks_deep.as_bytes()).unwrap().services.len(), 1);
    }

    proptest::proptest! {
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..2048)) {
            let _ = TrustedList::parse(&bytes);
        }

        #[test]
        fn mangled_lists_never_panic(cut in 0usize..1500, byte in proptest::prelude::any::<u8>()) {
            let mut bytes = list(QTST, GRANTED, "AQID").into_bytes();
            let at = cut.min(bytes.len() - 1);
            bytes[at] = byte;
            let _ = TrustedList::parse(&bytes);
            let _ = TrustedList::parse(&bytes[..at]);
        }
    }
}
