//! WeChat's callback XML: a hardened reader (no DOCTYPE, no entities beyond the five predefined,
//! bounded depth) and the writers of replies: the passive reply XML and the encrypted envelope
//! around it ([`super::envelope`] seals one into the other).
//!
//! Every callback body is parsed twice on the hot path (the encrypted envelope, then the
//! decrypted message), so [`Document`] keeps one copy of the input and stores every field as a
//! pair of byte ranges into it; only a value that had to be assembled (an unescaped `&lt;`,
//! text mixed with CDATA) is copied, once, to the end of that buffer.

use std::ops::Range;

use quick_xml::events::{BytesRef, Event};
use quick_xml::Reader;
use thiserror::Error;

use crate::domain::autoreply::Reply;

/// The deepest nesting accepted, counting `<xml>` as level 1. WeChat's deepest callback
/// (`xml > SendPicsInfo > PicList > item > PicMd5Sum`) has 5 levels.
pub const MAX_DEPTH: usize = 8;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum XmlError {
    #[error("DOCTYPE declarations are not accepted")]
    Doctype,
    #[error("malformed XML: {0}")]
    Malformed(String),
    #[error("XML nested deeper than {0} levels")]
    TooDeep(usize),
    #[error("the root element must be <xml>")]
    Root,
    #[error("missing element <{0}>")]
    Missing(&'static str),
    #[error("XML is not valid UTF-8")]
    Utf8,
    /// A numeric element (CreateTime, MsgId, AgentID, Location_X, ...) that does not parse.
    #[error("element <{field}> is not a valid number: {value:?}")]
    BadNumber { field: &'static str, value: String },
}

/// A parsed callback document: the text of every child of `<xml>`, in document order, with
/// nested containers (ScanCodeInfo, SendPicsInfo, ...) flattened into their leaves.
///
/// Leading and trailing whitespace of a leaf's text is dropped (it is the indentation between
/// elements); CDATA content is kept verbatim. An empty element (`<A/>`, `<A></A>`) is a leaf
/// with an empty value.
#[derive(Clone, Default)]
pub struct Document {
    /// The input, followed by the values that had to be assembled while parsing.
    text: String,
    /// Every leaf, in document order.
    fields: Vec<Field>,
}

#[derive(Clone)]
struct Field {
    /// Range of the element name in `text`.
    name: Range<usize>,
    /// Range of the element text in `text`.
    value: Range<usize>,
    /// Whether the leaf is a direct child of `<xml>` (not inside a container).
    top: bool,
}

impl Document {
    /// Parses a callback body. CDATA and escaped text are both accepted.
    ///
    /// Refused: a DOCTYPE (which is how entity bombs and external entities get in), any entity
    /// reference other than `&lt; &gt; &amp; &apos; &quot;` and numeric character references,
    /// nesting deeper than [`MAX_DEPTH`], a root other than `<xml>`, text mixed with child
    /// elements, and anything quick-xml finds ill-formed (mismatched or missing end tags).
    pub fn parse(bytes: &[u8]) -> Result<Self, XmlError> {
        let input = std::str::from_utf8(bytes).map_err(|_| XmlError::Utf8)?;
        // XML 1.0 allows no C0 control character but tab, LF and CR, raw or as a reference
        // (production [2] Char); quick-xml does not check. Refusing them keeps every value free
        // of the 0x1f separator that event ids are built with (see `normalize`).
        if let Some(at) = bytes
            .iter()
            .position(|&b| b < 0x20 && !matches!(b, b'\t' | b'\n' | b'\r'))
        {
            return Err(malformed(format!(
                "control character 0x{:02x} at byte {at}",
                bytes[at]
            )));
        }
        Parser::new(input).run()
    }

    /// The text of the first element with this name (at any depth), if present.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.iter().find(|(n, _)| *n == name).map(|(_, v)| v)
    }

    /// The text of a direct child of `<xml>` with this name, if present. Containers reuse
    /// names of the top level (a WeCom `change_contact` carries `ExtAttr/Item/Name` beside the
    /// member's own `Name`), so fields of the message itself are read with this.
    pub fn child(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .filter(|f| f.top)
            .map(|f| self.field(f))
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v)
    }

    /// Every element with this name (for repeated leaves such as PicMd5Sum).
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.iter().filter(move |(n, _)| *n == name).map(|(_, v)| v)
    }

    /// Every leaf as (name, text), in document order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        self.fields.iter().map(|f| self.field(f))
    }

    fn field(&self, f: &Field) -> (&str, &str) {
        // The parser cuts ranges at char boundaries of `text`; `get` keeps this panic-free
        // regardless.
        (
            self.text.get(f.name.clone()).unwrap_or_default(),
            self.text.get(f.value.clone()).unwrap_or_default(),
        )
    }
}

// Equality and Debug are about the fields, not the buffer they happen to live in.
impl PartialEq for Document {
    fn eq(&self, other: &Self) -> bool {
        self.iter().eq(other.iter())
    }
}

impl std::fmt::Debug for Document {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

/// The value of the innermost open element, while it is being read.
enum Value {
    Empty,
    /// A single piece, still a slice of the input.
    Input(Range<usize>),
    /// Assembled from several pieces at `text[start..]`; nothing else is appended to `text`
    /// while a value is being assembled.
    Tail(usize),
}

struct Parser<'a> {
    input: &'a str,
    reader: Reader<&'a [u8]>,
    text: String,
    fields: Vec<Field>,
    /// Open elements, `<xml>` included.
    depth: usize,
    /// Bit `d` is set when the element open at depth `d` has a child element.
    has_children: u32,
    root_seen: bool,
    /// The name of the innermost open element: the leaf's name if it ends without children.
    name: Range<usize>,
    value: Value,
    /// Whether the innermost element has content yet (non-whitespace text, CDATA, a reference).
    started: bool,
    /// Trailing whitespace of the last text piece (a range of the input): part of the value
    /// only if more content follows.
    pending_ws: Range<usize>,
}

const _: () = assert!(MAX_DEPTH < u32::BITS as usize);

fn is_xml_ws(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n')
}

fn malformed(msg: impl Into<String>) -> XmlError {
    XmlError::Malformed(msg.into())
}

impl<'a> Parser<'a> {
    fn new(input: &'a str) -> Self {
        let mut reader = Reader::from_str(input);
        // Mismatched end tags are errors (quick-xml's default, kept explicit).
        reader.config_mut().check_end_names = true;
        Self {
            input,
            reader,
            // Room for a few assembled values without reallocating.
            text: String::with_capacity(input.len() + 64),
            fields: Vec::with_capacity(16),
            depth: 0,
            has_children: 0,
            root_seen: false,
            name: 0..0,
            value: Value::Empty,
            started: false,
            pending_ws: 0..0,
        }
    }

    fn run(mut self) -> Result<Document, XmlError> {
        self.text.push_str(self.input);
        loop {
            let event = self.reader.read_event().map_err(|e| match e {
                quick_xml::Error::Encoding(_) => XmlError::Utf8,
                e => malformed(format!("{e} (at byte {})", self.reader.error_position())),
            })?;
            match event {
                Event::DocType(_) => return Err(XmlError::Doctype),
                Event::Decl(_) | Event::PI(_) | Event::Comment(_) => {}
                Event::Start(e) => self.open(e.name().0)?,
                Event::Empty(e) => {
                    self.open(e.name().0)?;
                    self.close();
                }
                Event::End(_) => self.close(),
                Event::Text(t) => self.text_piece(&t)?,
                Event::CData(c) => {
                    self.in_element("CDATA")?;
                    self.flush_ws();
                    self.push(&c);
                    self.started = true;
                }
                Event::GeneralRef(r) => {
                    self.in_element("a reference")?;
                    let c = resolve(&r)?;
                    self.flush_ws();
                    self.assemble();
                    self.text.push(c);
                    self.started = true;
                }
                Event::Eof => break,
            }
        }
        if self.depth > 0 {
            return Err(malformed("truncated document: <xml> is not closed"));
        }
        if !self.root_seen {
            return Err(XmlError::Root);
        }
        Ok(Document {
            text: self.text,
            fields: self.fields,
        })
    }

    /// Where `s` lies in the input, if it is a slice of it (quick-xml's slice reader hands out
    /// slices of the input for names, text and CDATA).
    fn input_range(&self, s: &str) -> Option<Range<usize>> {
        let at = (s.as_ptr() as usize).wrapping_sub(self.input.as_ptr() as usize);
        (at <= self.input.len() && s.len() <= self.input.len() - at).then(|| at..at + s.len())
    }

    fn in_element(&self, what: &str) -> Result<(), XmlError> {
        if self.depth == 0 {
            return Err(malformed(format!("{what} outside the root element")));
        }
        if self.depth == 1 {
            return Err(malformed(format!("{what} directly inside <xml>")));
        }
        if self.has_children & (1 << self.depth) != 0 {
            return Err(malformed(format!(
                "{what} mixed with child elements in <{}>",
                self.text.get(self.name.clone()).unwrap_or_default()
            )));
        }
        Ok(())
    }

    fn open(&mut self, name: &str) -> Result<(), XmlError> {
        if self.depth == 0 {
            if self.root_seen {
                return Err(malformed("content after the root element"));
            }
            if name != "xml" {
                return Err(XmlError::Root);
            }
            self.root_seen = true;
        } else if self.started {
            return Err(malformed(format!(
                "text mixed with child elements in <{}>",
                self.text.get(self.name.clone()).unwrap_or_default()
            )));
        }
        if self.depth == MAX_DEPTH {
            return Err(XmlError::TooDeep(MAX_DEPTH));
        }
        self.has_children |= 1 << self.depth;
        self.depth += 1;
        self.has_children &= !(1 << self.depth);
        // The parent has no value in progress (checked above), so the tail is free.
        self.name = match self.input_range(name) {
            Some(r) => r,
            None => {
                let start = self.text.len();
                self.text.push_str(name);
                start..self.text.len()
            }
        };
        self.value = Value::Empty;
        self.started = false;
        self.pending_ws = 0..0;
        Ok(())
    }

    /// Ends the innermost element (quick-xml has checked that the end tag matches). A leaf
    /// below the root becomes a field.
    fn close(&mut self) {
        let leaf = self.has_children & (1 << self.depth) == 0;
        let value = match std::mem::replace(&mut self.value, Value::Empty) {
            Value::Empty => 0..0,
            Value::Input(r) => r,
            Value::Tail(start) => start..self.text.len(),
        };
        if leaf && self.depth > 1 {
            self.fields.push(Field {
                name: self.name.clone(),
                value,
                top: self.depth == 2,
            });
        }
        self.depth = self.depth.saturating_sub(1);
        // The parent now has a child: any text it gets from here on is mixed content.
        self.started = false;
        self.pending_ws = 0..0;
    }

    fn text_piece(&mut self, t: &str) -> Result<(), XmlError> {
        let t = if self.started {
            t
        } else {
            t.trim_start_matches(is_xml_ws)
        };
        if t.is_empty() {
            // Whitespace before any content: indentation, wherever it is.
            return Ok(());
        }
        self.in_element("text")?;
        self.flush_ws();
        let core = t.trim_end_matches(is_xml_ws);
        if !core.is_empty() {
            self.push(core);
            self.started = true;
        }
        let ws = &t[core.len()..];
        match self.input_range(ws) {
            Some(r) => self.pending_ws = r,
            // Not a slice of the input (never, with the slice reader): keep it as content.
            None => self.push(ws),
        }
        Ok(())
    }

    fn flush_ws(&mut self) {
        let ws = std::mem::replace(&mut self.pending_ws, 0..0);
        if !ws.is_empty() {
            self.assemble();
            self.text.extend_from_within(ws);
        }
    }

    /// Makes the current value an assembled one at the tail of `text`.
    fn assemble(&mut self) {
        let start = match std::mem::replace(&mut self.value, Value::Empty) {
            Value::Tail(start) => start,
            Value::Empty => self.text.len(),
            Value::Input(r) => {
                let start = self.text.len();
                self.text.extend_from_within(r);
                start
            }
        };
        self.value = Value::Tail(start);
    }

    /// Appends a piece to the current value, borrowing it from the input when it is the
    /// first and only one.
    fn push(&mut self, s: &str) {
        if let Value::Empty = self.value {
            if let Some(r) = self.input_range(s) {
                self.value = Value::Input(r);
                return;
            }
        }
        self.assemble();
        self.text.push_str(s);
    }
}

/// The five predefined entities and numeric character references; nothing else.
fn resolve(r: &BytesRef<'_>) -> Result<char, XmlError> {
    if r.is_char_ref() {
        return match r.resolve_char_ref() {
            Ok(Some(c)) if is_xml_char(c) => Ok(c),
            _ => Err(malformed(format!(
                "invalid character reference &{};",
                r.as_ref()
            ))),
        };
    }
    match r.as_ref() {
        "lt" => Ok('<'),
        "gt" => Ok('>'),
        "amp" => Ok('&'),
        "apos" => Ok('\''),
        "quot" => Ok('"'),
        other => Err(malformed(format!("undefined entity &{other};"))),
    }
}

/// Appends `<![CDATA[s]]>`, splitting every `]]>` of `s` across two sections
/// (`]]` ends one, `>` starts the next) so that the section cannot be closed early. Characters
/// that XML 1.0 cannot carry at all (most C0 controls, U+FFFE, U+FFFF) are left out: they would
/// make the whole reply ill-formed, and WeChat would drop it. They are left out *before* the
/// split: dropping the `\0` of `]]\0>` afterwards would join a terminator that ends the section
/// early and lets the rest of the value be read as markup (found by the property tests).
fn push_cdata(out: &mut String, s: &str) {
    let mut clean = String::new();
    let s = if s.chars().all(is_xml_char) {
        s
    } else {
        push_xml_chars(&mut clean, s);
        clean.as_str()
    };
    out.push_str("<![CDATA[");
    let mut rest = s;
    while let Some(i) = rest.find("]]>") {
        out.push_str(&rest[..i + 2]);
        out.push_str("]]><![CDATA[");
        rest = &rest[i + 2..];
    }
    out.push_str(rest);
    out.push_str("]]>");
}

/// Appends `s` as escaped character data.
fn push_text(out: &mut String, s: &str) {
    let mut clean = String::new();
    push_xml_chars(&mut clean, s);
    out.push_str(&quick_xml::escape::escape(clean.as_str()));
}

/// XML 1.0's Char production (surrogates cannot occur in a `char`).
fn is_xml_char(c: char) -> bool {
    !matches!(c, '\0'..='\u{8}' | '\u{b}' | '\u{c}' | '\u{e}'..='\u{1f}' | '\u{fffe}' | '\u{ffff}')
}

fn push_xml_chars(out: &mut String, s: &str) {
    if s.chars().all(is_xml_char) {
        out.push_str(s);
    } else {
        out.extend(s.chars().filter(|&c| is_xml_char(c)));
    }
}

fn element_cdata(out: &mut String, name: &str, value: &str) {
    out.push('<');
    out.push_str(name);
    out.push('>');
    push_cdata(out, value);
    out.push_str("</");
    out.push_str(name);
    out.push('>');
}

fn element_text(out: &mut String, name: &str, value: &str) {
    out.push('<');
    out.push_str(name);
    out.push('>');
    push_text(out, value);
    out.push_str("</");
    out.push_str(name);
    out.push('>');
}

/// The encrypted reply envelope of safe mode / WeCom.
pub fn encrypted_reply(encrypt: &str, msg_signature: &str, timestamp: &str, nonce: &str) -> String {
    let mut out = String::with_capacity(encrypt.len() + msg_signature.len() + nonce.len() + 160);
    out.push_str("<xml>");
    element_cdata(&mut out, "Encrypt", encrypt);
    element_cdata(&mut out, "MsgSignature", msg_signature);
    element_text(&mut out, "TimeStamp", timestamp);
    element_cdata(&mut out, "Nonce", nonce);
    out.push_str("</xml>");
    out
}

/// The header every passive reply starts with: who it goes to, from whom, when, and its type.
fn reply_head(out: &mut String, to_user: &str, from_user: &str, create_time: u64, msg_type: &str) {
    out.push_str("<xml>");
    element_cdata(out, "ToUserName", to_user);
    element_cdata(out, "FromUserName", from_user);
    out.push_str("<CreateTime>");
    out.push_str(&create_time.to_string());
    out.push_str("</CreateTime>");
    element_cdata(out, "MsgType", msg_type);
}

/// A passive text reply (`MsgType text`) from the account to a user.
pub fn text_reply(to_user: &str, from_user: &str, create_time: u64, content: &str) -> String {
    let mut out = String::with_capacity(to_user.len() + from_user.len() + content.len() + 200);
    reply_head(&mut out, to_user, from_user, create_time, "text");
    element_cdata(&mut out, "Content", content);
    out.push_str("</xml>");
    out
}

/// A passive image reply (`MsgType image`): a media_id uploaded to WeChat.
pub fn image_reply(to_user: &str, from_user: &str, create_time: u64, media_id: &str) -> String {
    let mut out = String::with_capacity(to_user.len() + from_user.len() + media_id.len() + 220);
    reply_head(&mut out, to_user, from_user, create_time, "image");
    out.push_str("<Image>");
    element_cdata(&mut out, "MediaId", media_id);
    out.push_str("</Image></xml>");
    out
}

/// One article of a passive news reply.
#[derive(Debug, Clone, Copy)]
pub struct Article<'a> {
    pub title: &'a str,
    pub description: &'a str,
    pub pic_url: &'a str,
    pub url: &'a str,
}

/// A passive news reply (`MsgType news`, `ArticleCount`, `Articles/item`), as WeChat's
/// "被动回复用户消息" documents it (one article to a message, up to 8 to an event).
pub fn news_reply(
    to_user: &str,
    from_user: &str,
    create_time: u64,
    articles: &[Article<'_>],
) -> String {
    let mut out = String::with_capacity(300 + articles.len() * 200);
    reply_head(&mut out, to_user, from_user, create_time, "news");
    out.push_str("<ArticleCount>");
    out.push_str(&articles.len().to_string());
    out.push_str("</ArticleCount><Articles>");
    for a in articles {
        out.push_str("<item>");
        element_cdata(&mut out, "Title", a.title);
        element_cdata(&mut out, "Description", a.description);
        element_cdata(&mut out, "PicUrl", a.pic_url);
        element_cdata(&mut out, "Url", a.url);
        out.push_str("</item>");
    }
    out.push_str("</Articles></xml>");
    out
}

/// The passive reply XML of an auto-reply: a text, an image, or one article.
pub fn passive_reply(to_user: &str, from_user: &str, create_time: u64, reply: &Reply) -> String {
    match reply {
        Reply::Text { content } => text_reply(to_user, from_user, create_time, content),
        Reply::Image { media_id } => image_reply(to_user, from_user, create_time, media_id),
        Reply::News {
            title,
            description,
            pic_url,
            url,
        } => news_reply(
            to_user,
            from_user,
            create_time,
            &[Article {
                title,
                description,
                pic_url,
                url,
            }],
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Document, XmlError> {
        Document::parse(s.as_bytes())
    }

    fn fields(doc: &Document) -> Vec<(&str, &str)> {
        doc.iter().collect()
    }

    #[test]
    fn cdata_and_plain_text_are_both_read() {
        let doc = parse(
            "<xml><ToUserName><![CDATA[gh_123]]></ToUserName><CreateTime>1348831860</CreateTime>\
             <Content>a &lt;b&gt; &amp; &quot;c&quot; &apos;d&apos; &#20320;&#x597D;</Content></xml>",
        )
        .unwrap();
        assert_eq!(doc.get("ToUserName"), Some("gh_123"));
        assert_eq!(doc.get("CreateTime"), Some("1348831860"));
        assert_eq!(doc.get("Content"), Some("a <b> & \"c\" 'd' 你好"));
        assert_eq!(doc.get("Missing"), None);
    }

    #[test]
    fn text_and_cdata_can_be_mixed_in_one_element() {
        let doc =
            parse("<xml><A>x<![CDATA[<y>]]>&amp;z</A><B> <![CDATA[ v ]]> </B></xml>").unwrap();
        assert_eq!(doc.get("A"), Some("x<y>&z"));
        // Whitespace around the CDATA is indentation; inside it, it is content.
        assert_eq!(doc.get("B"), Some(" v "));
    }

    #[test]
    fn whitespace_between_elements_is_ignored_but_cdata_is_verbatim() {
        let doc = parse(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<!-- a comment -->\n<xml>\n  \
             <ToUserName>  gh_123 \n</ToUserName>\n  <Content><![CDATA[  two\r\nlines  ]]></Content>\n  \
             <Inner>a  b</Inner>\n</xml>\n",
        )
        .unwrap();
        assert_eq!(
            fields(&doc),
            vec![
                ("ToUserName", "gh_123"),
                ("Content", "  two\r\nlines  "),
                ("Inner", "a  b")
            ]
        );
    }

    #[test]
    fn empty_elements_are_empty_leaves() {
        let doc = parse("<xml><EventKey/><Ticket></Ticket><X><![CDATA[]]></X></xml>").unwrap();
        assert_eq!(
            fields(&doc),
            vec![("EventKey", ""), ("Ticket", ""), ("X", "")]
        );
        assert_eq!(fields(&parse("<xml/>").unwrap()), vec![]);
    }

    #[test]
    fn nested_containers_are_flattened_in_document_order() {
        // The pic_photo_or_album sample of WeChat's custom-menu event documentation.
        let doc = parse(
            "<xml><ToUserName><![CDATA[gh_e136c6e50636]]></ToUserName>\
             <FromUserName><![CDATA[oMgHVjngRipVsoxg6TuX3vz6glDg]]></FromUserName>\
             <CreateTime>1408090816</CreateTime><MsgType><![CDATA[event]]></MsgType>\
             <Event><![CDATA[pic_photo_or_album]]></Event><EventKey><![CDATA[6]]></EventKey>\
             <SendPicsInfo><Count>2</Count><PicList>\
             <item><PicMd5Sum><![CDATA[5a75aaca956d97be686719218f275c6b]]></PicMd5Sum></item>\
             <item><PicMd5Sum><![CDATA[1b5f7c23b5bf75682a53e7b6d163e185]]></PicMd5Sum></item>\
             </PicList></SendPicsInfo></xml>",
        )
        .unwrap();
        assert_eq!(doc.get("Count"), Some("2"));
        assert_eq!(
            doc.get_all("PicMd5Sum").collect::<Vec<_>>(),
            vec![
                "5a75aaca956d97be686719218f275c6b",
                "1b5f7c23b5bf75682a53e7b6d163e185"
            ]
        );
        let names: Vec<_> = doc.iter().map(|(n, _)| n).collect();
        assert_eq!(
            names,
            vec![
                "ToUserName",
                "FromUserName",
                "CreateTime",
                "MsgType",
                "Event",
                "EventKey",
                "Count",
                "PicMd5Sum",
                "PicMd5Sum"
            ]
        );
    }

    #[test]
    fn child_reads_only_the_top_level_while_get_searches_every_depth() {
        // A WeCom update_user without a top-level Name, but with ExtAttr items that have one.
        let doc = parse(
            "<xml><UserID>zhangsan</UserID><ExtAttr><Item><Name><![CDATA[爱好]]></Name>\
             </Item></ExtAttr><Address>广州市</Address></xml>",
        )
        .unwrap();
        assert_eq!(doc.child("Name"), None);
        assert_eq!(doc.get("Name"), Some("爱好"));
        assert_eq!(doc.child("UserID"), Some("zhangsan"));
        assert_eq!(doc.child("Address"), Some("广州市"));
    }

    #[test]
    fn control_characters_are_refused_raw_or_as_references() {
        assert!(matches!(
            Document::parse(b"<xml><A>a\x1fb</A></xml>"),
            Err(XmlError::Malformed(_))
        ));
        assert!(matches!(
            parse("<xml><A>a&#x1f;b</A></xml>"),
            Err(XmlError::Malformed(_))
        ));
        assert!(matches!(
            parse("<xml><A>&#xFFFE;</A></xml>"),
            Err(XmlError::Malformed(_))
        ));
        // Tab, LF and CR are characters like any other.
        assert_eq!(
            parse("<xml><A><![CDATA[a\tb\r\nc]]>&#9;</A></xml>")
                .unwrap()
                .get("A"),
            Some("a\tb\r\nc\t")
        );
    }

    #[test]
    fn a_doctype_is_refused_so_entity_bombs_never_expand() {
        let billion_laughs = r#"<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
]>
<xml><Content>&lol4;</Content></xml>"#;
        assert_eq!(parse(billion_laughs), Err(XmlError::Doctype));
        let xxe = r#"<?xml version="1.0"?><!DOCTYPE xml [<!ENTITY xxe SYSTEM "file:///etc/passwd">]><xml><Content>&xxe;</Content></xml>"#;
        assert_eq!(parse(xxe), Err(XmlError::Doctype));
        let external_dtd = r#"<!DOCTYPE xml SYSTEM "http://attacker.example/x.dtd"><xml/>"#;
        assert_eq!(parse(external_dtd), Err(XmlError::Doctype));
    }

    #[test]
    fn entities_other_than_the_predefined_ones_are_refused() {
        for body in [
            "<xml><Content>&xxe;</Content></xml>",
            "<xml><Content>&nbsp;</Content></xml>",
            "<xml><Content>&#0;</Content></xml>",
            "<xml><Content>&#xD800;</Content></xml>",
            "<xml><Content>a & b</Content></xml>",
        ] {
            assert!(
                matches!(parse(body), Err(XmlError::Malformed(_))),
                "{body} should be refused"
            );
        }
    }

    #[test]
    fn deep_nesting_is_refused() {
        let ok = format!("<xml>{}x{}</xml>", "<a>".repeat(7), "</a>".repeat(7));
        assert_eq!(parse(&ok).unwrap().get("a"), Some("x"));
        let deep = format!("<xml>{}x{}</xml>", "<a>".repeat(8), "</a>".repeat(8));
        assert_eq!(parse(&deep), Err(XmlError::TooDeep(MAX_DEPTH)));
        let bomb = "<a>".repeat(100_000);
        assert_eq!(
            parse(&format!("<xml>{bomb}")),
            Err(XmlError::TooDeep(MAX_DEPTH))
        );
    }

    #[test]
    fn the_root_must_be_xml() {
        assert_eq!(parse("<root><A>1</A></root>"), Err(XmlError::Root));
        assert_eq!(parse("<XML><A>1</A></XML>"), Err(XmlError::Root));
        assert_eq!(parse(""), Err(XmlError::Root));
        assert_eq!(parse("   \n"), Err(XmlError::Root));
        assert!(matches!(
            parse("<xml></xml><xml></xml>"),
            Err(XmlError::Malformed(_))
        ));
        assert!(matches!(parse("hello"), Err(XmlError::Malformed(_))));
        assert!(matches!(
            parse("<xml>hello</xml>"),
            Err(XmlError::Malformed(_))
        ));
    }

    #[test]
    fn invalid_utf8_is_refused() {
        assert_eq!(
            Document::parse(b"<xml><A>\xff\xfe</A></xml>"),
            Err(XmlError::Utf8)
        );
        // Truncated in the middle of a multi-byte character.
        let s = "<xml><A>你</A></xml>".as_bytes();
        assert_eq!(Document::parse(&s[..10]), Err(XmlError::Utf8));
    }

    #[test]
    fn truncated_and_ill_formed_documents_are_refused() {
        let full = "<xml><ToUserName><![CDATA[gh_1]]></ToUserName><A>x &amp; y</A><B/></xml>";
        assert!(parse(full).is_ok());
        for end in 0..full.len() {
            let r = parse(&full[..end]);
            assert!(r.is_err(), "prefix {:?} was accepted", &full[..end]);
        }
        for body in [
            "<xml><A>1</B></xml>",
            "<xml><A>1</A>",
            "<xml><A>1</A></xml></A>",
            "<xml><A>text<B>1</B></A></xml>",
            "<xml><A><B>1</B>text</A></xml>",
            "<xml><A><![CDATA[x]]><B/></A></xml>",
            "<xml><![CDATA[x]]></xml>",
            "<xml></xml>trailing",
            "<xml><A attr=\"1></A></xml>",
        ] {
            assert!(
                matches!(parse(body), Err(XmlError::Malformed(_))),
                "{body} should be malformed, got {:?}",
                parse(body)
            );
        }
    }

    #[test]
    fn no_input_makes_the_parser_panic() {
        // Every prefix, and every single-byte corruption, of a realistic document.
        let base = "<?xml version=\"1.0\"?><xml><A><![CDATA[a]]b]]></A><B>&#x41;&lt;</B>\
                    <C><D>1</D><E/></C><!-- c --></xml>";
        assert!(parse(base).is_ok());
        let bytes = base.as_bytes();
        for i in 0..bytes.len() {
            let _ = Document::parse(&bytes[..i]);
            for b in [
                b'<', b'>', b'&', b'/', b'!', b'?', b']', b'"', 0u8, 0xff, b'x',
            ] {
                let mut v = bytes.to_vec();
                v[i] = b;
                let _ = Document::parse(&v);
            }
        }
    }

    #[test]
    fn a_utf8_bom_and_attributes_are_tolerated() {
        let doc = Document::parse("\u{feff}<xml><A id=\"1\">v</A></xml>".as_bytes()).unwrap();
        assert_eq!(doc.get("A"), Some("v"));
    }

    #[test]
    fn cdata_terminators_in_reply_values_round_trip() {
        let content = "a]]>b]]]]>c<![CDATA[d]]>";
        let reply = text_reply("oUser", "gh_account", 1_700_000_000, content);
        let doc = parse(&reply).unwrap();
        assert_eq!(
            fields(&doc),
            vec![
                ("ToUserName", "oUser"),
                ("FromUserName", "gh_account"),
                ("CreateTime", "1700000000"),
                ("MsgType", "text"),
                ("Content", content),
            ]
        );
    }

    #[test]
    fn an_auto_reply_is_written_as_its_kind_of_passive_reply() {
        let text = Reply::Text {
            content: "你好".into(),
        };
        assert_eq!(
            passive_reply("toUser", "fromUser", 12345678, &text),
            text_reply("toUser", "fromUser", 12345678, "你好")
        );
        let image = Reply::Image {
            media_id: "M".into(),
        };
        assert_eq!(
            passive_reply("u", "a", 1, &image),
            image_reply("u", "a", 1, "M")
        );
        let news = Reply::News {
            title: "T".into(),
            description: "D".into(),
            pic_url: "https://p".into(),
            url: "https://u".into(),
        };
        let doc = Document::parse(passive_reply("u", "a", 1, &news).as_bytes()).unwrap();
        assert_eq!(doc.get("MsgType"), Some("news"));
        assert_eq!(doc.get("ArticleCount"), Some("1"));
        assert_eq!(doc.get("Description"), Some("D"));
        assert_eq!(doc.get("Url"), Some("https://u"));
    }

    #[test]
    fn the_text_reply_has_wechat_s_layout() {
        assert_eq!(
            text_reply("toUser", "fromUser", 12345678, "你好"),
            "<xml><ToUserName><![CDATA[toUser]]></ToUserName><FromUserName><![CDATA[fromUser]]></FromUserName>\
             <CreateTime>12345678</CreateTime><MsgType><![CDATA[text]]></MsgType><Content><![CDATA[你好]]></Content></xml>"
        );
    }

    #[test]
    fn control_characters_xml_cannot_carry_are_left_out_of_replies() {
        let reply = text_reply("u", "a", 1, "a\u{0}b\u{1b}c\td\ne");
        assert_eq!(parse(&reply).unwrap().get("Content"), Some("abc\td\ne"));
    }

    #[test]
    fn the_encrypted_reply_has_wechat_s_layout_and_round_trips() {
        let reply = encrypted_reply("msg_encrypt+/=", "msg_signature", "1409304348", "xxxxxx");
        assert_eq!(
            reply,
            "<xml><Encrypt><![CDATA[msg_encrypt+/=]]></Encrypt><MsgSignature><![CDATA[msg_signature]]></MsgSignature>\
             <TimeStamp>1409304348</TimeStamp><Nonce><![CDATA[xxxxxx]]></Nonce></xml>"
        );
        let odd = encrypted_reply("e]]>", "s", "1<2&3", "n]]>");
        let doc = parse(&odd).unwrap();
        assert_eq!(
            fields(&doc),
            vec![
                ("Encrypt", "e]]>"),
                ("MsgSignature", "s"),
                ("TimeStamp", "1<2&3"),
                ("Nonce", "n]]>")
            ]
        );
    }

    #[test]
    fn documents_compare_by_their_fields() {
        let a = parse("<xml><A>1</A></xml>").unwrap();
        let b = parse("<xml>\n  <A><![CDATA[1]]></A>\n</xml>").unwrap();
        assert_eq!(a, b);
        assert_eq!(format!("{a:?}"), "{\"A\": \"1\"}");
    }

    #[test]
    fn image_and_news_replies_have_wechats_shape_and_survive_hostile_values() {
        let image = image_reply("oUser", "gh_1", 7, "MEDIA]]>x");
        let doc = parse(&image).unwrap();
        assert_eq!(doc.get("MsgType"), Some("image"));
        assert_eq!(doc.get("MediaId"), Some("MEDIA]]>x"));
        assert!(image.contains("<Image><MediaId>"), "{image}");

        let news = news_reply(
            "oUser",
            "gh_1",
            7,
            &[Article {
                title: "A ]]> B",
                description: "<b>",
                pic_url: "https://p/1.jpg",
                url: "https://example.com/?a=1&b=2",
            }],
        );
        let doc = parse(&news).unwrap();
        assert_eq!(doc.get("MsgType"), Some("news"));
        assert_eq!(doc.get("ArticleCount"), Some("1"));
        assert_eq!(doc.get("Title"), Some("A ]]> B"));
        assert_eq!(doc.get("Description"), Some("<b>"));
        assert_eq!(doc.get("Url"), Some("https://example.com/?a=1&b=2"));
        assert!(news.contains("<Articles><item><Title>"), "{news}");
    }
}

/// Property tests, the abuse proofs of SECURITY.md: the reader never panics on any input, and
/// what the writers produce always reads back as the values written.
#[cfg(test)]
mod proptests {
    use proptest::prelude::*;

    use super::*;

    /// Pieces of XML, well-formed and not, that the generated documents are assembled from.
    fn xml_piece() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("<xml>".to_owned()),
            Just("</xml>".to_owned()),
            Just("<xml/>".to_owned()),
            Just("<A>".to_owned()),
            Just("</A>".to_owned()),
            Just("<B/>".to_owned()),
            Just("<C x=\"1\">".to_owned()),
            Just("</C>".to_owned()),
            Just("<![CDATA[".to_owned()),
            Just("]]>".to_owned()),
            Just("&lt;".to_owned()),
            Just("&amp;".to_owned()),
            Just("&#x41;".to_owned()),
            Just("&#0;".to_owned()),
            Just("&#xD800;".to_owned()),
            Just("&lol;".to_owned()),
            Just("&".to_owned()),
            Just("<".to_owned()),
            Just(">".to_owned()),
            Just("<!DOCTYPE xml [<!ENTITY lol \"lol\">]>".to_owned()),
            Just("<?xml version=\"1.0\"?>".to_owned()),
            Just("<!-- c -->".to_owned()),
            Just("<?pi x?>".to_owned()),
            Just(" \n\t\r".to_owned()),
            Just("\u{feff}".to_owned()),
            Just("中文".to_owned()),
            "[a-zA-Z0-9 ]{0,8}",
            ".{0,8}",
        ]
    }

    fn xml_ish() -> impl Strategy<Value = String> {
        prop::collection::vec(xml_piece(), 0..24).prop_map(|pieces| pieces.concat())
    }

    /// A value XML can carry (the writers drop anything else, so expected values are these).
    fn xml_value() -> impl Strategy<Value = String> {
        prop_oneof![
            ".{0,24}",
            // The characters the writers have to treat specially, densely.
            prop::collection::vec(
                prop_oneof![
                    Just("]]>"),
                    Just("]]"),
                    Just("]"),
                    Just(">"),
                    Just("<"),
                    Just("&"),
                    Just("<![CDATA["),
                    Just("\u{0}"),
                    Just("\u{1b}"),
                    Just("\u{fffe}"),
                    Just(" "),
                    Just("\r\n"),
                    Just("x"),
                    Just("你"),
                ],
                0..24
            )
            .prop_map(|v| v.concat()),
        ]
    }

    fn xml_chars(s: &str) -> String {
        s.chars().filter(|&c| is_xml_char(c)).collect()
    }

    /// The whitespace the writers leave as it is (CR becomes `&#13;`).
    fn is_literal_ws(c: char) -> bool {
        matches!(c, ' ' | '\t' | '\n')
    }

    fn name() -> impl Strategy<Value = String> {
        "[A-Za-z_][A-Za-z0-9_]{0,12}"
    }

    #[test]
    fn a_control_character_inside_a_cdata_terminator_cannot_end_the_section() {
        // Regression: `]]\0>` became `]]>` after the split, so the section ended early and the
        // rest of the value was read as markup: here, a second MsgType injected into the reply.
        let content = "]]\u{0}></Content><MsgType>news</MsgType><Content><![CDATA[x";
        let reply = text_reply("oUser", "gh_account", 1, content);
        let doc = Document::parse(reply.as_bytes()).unwrap();
        assert_eq!(doc.get_all("MsgType").collect::<Vec<_>>(), ["text"]);
        assert_eq!(
            doc.child("Content"),
            Some("]]></Content><MsgType>news</MsgType><Content><![CDATA[x")
        );
        let envelope = encrypted_reply("e", "s]]\u{1}>", "1", "n");
        assert_eq!(
            Document::parse(envelope.as_bytes())
                .unwrap()
                .child("MsgSignature"),
            Some("s]]>")
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn parse_never_panics_on_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            let _ = Document::parse(&bytes);
        }

        #[test]
        fn parse_never_panics_on_xml_ish_strings(s in xml_ish()) {
            if let Ok(doc) = Document::parse(s.as_bytes()) {
                // Whatever was accepted reads back, and no value carries a control character
                // (normalize builds event ids with 0x1f as the separator).
                for (n, v) in doc.iter() {
                    prop_assert!(doc.get(n).is_some());
                    prop_assert!(
                        !v.bytes().any(|b| b < 0x20 && !matches!(b, b'\t' | b'\n' | b'\r')),
                        "{:?}", v
                    );
                }
            }
        }

        #[test]
        fn documents_of_cdata_and_escaped_text_read_back_as_written(
            fields in prop::collection::vec((name(), xml_value(), any::<bool>()), 0..12),
            container in any::<bool>(),
        ) {
            let mut xml = String::from("<xml>");
            if container {
                xml.push_str("<Box>");
            }
            let mut expected = Vec::new();
            for (name, value, cdata) in &fields {
                if *cdata {
                    element_cdata(&mut xml, name, value);
                    expected.push((name.clone(), xml_chars(value)));
                } else {
                    element_text(&mut xml, name, value);
                    // Escaped text loses its leading and trailing whitespace (indentation),
                    // except CR, which the writer escapes as `&#13;`: a reference is content.
                    let trimmed = xml_chars(value).trim_matches(is_literal_ws).to_owned();
                    expected.push((name.clone(), trimmed));
                }
            }
            if container {
                xml.push_str("</Box>");
                if fields.is_empty() {
                    // An empty container is a leaf itself.
                    expected.push(("Box".to_owned(), String::new()));
                }
            }
            xml.push_str("</xml>");
            let doc = Document::parse(xml.as_bytes()).map_err(|e| TestCaseError::fail(format!("{e}: {xml}")))?;
            let got: Vec<(String, String)> =
                doc.iter().map(|(n, v)| (n.to_owned(), v.to_owned())).collect();
            prop_assert_eq!(got, expected, "{}", xml);
        }

        #[test]
        fn a_text_reply_reads_back_as_its_values(
            to in xml_value(),
            from in xml_value(),
            create_time in any::<u64>(),
            content in xml_value(),
        ) {
            let reply = text_reply(&to, &from, create_time, &content);
            let doc = Document::parse(reply.as_bytes())
                .map_err(|e| TestCaseError::fail(format!("{e}: {reply}")))?;
            let create_time = create_time.to_string();
            let (to, from, content) = (xml_chars(&to), xml_chars(&from), xml_chars(&content));
            prop_assert_eq!(
                doc.iter().collect::<Vec<_>>(),
                vec![
                    ("ToUserName", to.as_str()),
                    ("FromUserName", from.as_str()),
                    ("CreateTime", create_time.as_str()),
                    ("MsgType", "text"),
                    ("Content", content.as_str()),
                ],
                "{}", reply
            );
        }

        #[test]
        fn an_encrypted_reply_reads_back_as_its_values(
            encrypt in xml_value(),
            signature in xml_value(),
            timestamp in xml_value(),
            nonce in xml_value(),
        ) {
            let reply = encrypted_reply(&encrypt, &signature, &timestamp, &nonce);
            let doc = Document::parse(reply.as_bytes())
                .map_err(|e| TestCaseError::fail(format!("{e}: {reply}")))?;
            let timestamp = xml_chars(&timestamp).trim_matches(is_literal_ws).to_owned();
            let (encrypt, signature, nonce) =
                (xml_chars(&encrypt), xml_chars(&signature), xml_chars(&nonce));
            prop_assert_eq!(
                doc.iter().collect::<Vec<_>>(),
                vec![
                    ("Encrypt", encrypt.as_str()),
                    ("MsgSignature", signature.as_str()),
                    ("TimeStamp", timestamp.as_str()),
                    ("Nonce", nonce.as_str()),
                ],
                "{}", reply
            );
        }
    }
}
