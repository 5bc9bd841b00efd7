//! A small, safe subset of Python's pickle machine: enough to read what `torch.save` writes (protocol 2, the
//! torch default, and the opcodes of protocols 3–5 that modern Pythons emit). It builds plain values and
//! never imports or calls anything: a `GLOBAL` becomes a name, and `REDUCE`/`NEWOBJ`/`BUILD` on a name become
//! an [`Value::Object`] holding the name and arguments, which the torch layer interprets (tensors, ordered
//! dicts) and everything else ignores. Persistent ids (torch storages) are resolved by a callback.
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

/// A list or dict that pickle can fill after memoising it (EMPTY_DICT, BINPUT, …, SETITEMS), so shared.
pub type Shared<T> = Rc<RefCell<T>>;

#[derive(Debug, Clone)]
pub enum Value {
    None,
    Bool(bool),
    /// LONG1 carries the 80-bit magic number of torch's legacy format, hence 128 bits.
    Int(i128),
    Float(f64),
    Str(Rc<str>),
    Bytes(Rc<[u8]>),
    Tuple(Rc<Vec<Value>>),
    List(Shared<Vec<Value>>),
    /// Insertion order kept (state dicts are OrderedDicts).
    Dict(Shared<Vec<(Value, Value)>>),
    /// `module.name` from GLOBAL / STACK_GLOBAL.
    Global(Rc<str>),
    /// `callable(*args)` from REDUCE or NEWOBJ, with the state BUILD gave it, if any.
    Object(Rc<Object>),
    /// What the persistent-id callback returned for a BINPERSID (torch: an index into its storages).
    Persistent(usize),
}

#[derive(Debug)]
pub struct Object {
    pub callable: Value,
    pub args: Vec<Value>,
    /// Items SETITEMS added (an `OrderedDict()` is REDUCE'd empty, then filled this way).
    pub items: Shared<Vec<(Value, Value)>>,
    pub state: RefCell<Option<Value>>,
}

impl Value {
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }
    pub fn as_int(&self) -> Option<i128> {
        match self {
            Value::Int(i) => Some(*i),
            Value::Bool(b) => Some(*b as i128),
            _ => None,
        }
    }
    /// Items of a tuple or list.
    pub fn items(&self) -> Option<Vec<Value>> {
        match self {
            Value::Tuple(t) => Some(t.as_ref().clone()),
            Value::List(l) => Some(l.borrow().clone()),
            _ => None,
        }
    }
    /// Entries of a dict, including an `OrderedDict()` object filled by SETITEMS.
    pub fn dict_entries(&self) -> Option<Vec<(Value, Value)>> {
        match self {
            Value::Dict(d) => Some(d.borrow().clone()),
            Value::Object(o) if o.callable.global_name() == Some("collections.OrderedDict") => {
                Some(o.items.borrow().clone())
            }
            _ => None,
        }
    }
    pub fn global_name(&self) -> Option<&str> {
        match self {
            Value::Global(g) => Some(g),
            _ => None,
        }
    }
}

/// What went wrong, with the byte offset of the opcode; the torch layer adds the file name.
#[derive(Debug, Clone, PartialEq)]
pub struct PickleError {
    pub offset: usize,
    pub reason: String,
}

impl std::fmt::Display for PickleError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "pickle byte {}: {}", self.offset, self.reason)
    }
}

/// Reads one pickle from `bytes`; returns the value and how many bytes it used (torch's legacy format is
/// several pickles back to back). `persistent_id` turns a BINPERSID argument into an index.
pub fn load(
    bytes: &[u8],
    persistent_id: &mut dyn FnMut(&Value) -> Result<usize, String>,
) -> Result<(Value, usize), PickleError> {
    Machine {
        bytes,
        pos: 0,
        stack: Vec::new(),
        marks: Vec::new(),
        memo: BTreeMap::new(),
    }
    .run(persistent_id)
}

struct Machine<'a> {
    bytes: &'a [u8],
    pos: usize,
    stack: Vec<Value>,
    /// Stack heights at each MARK.
    marks: Vec<usize>,
    memo: BTreeMap<u32, Value>,
}

impl Machine<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], String> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len())
            .ok_or_else(|| format!("truncated: {n} bytes wanted at the end of the data"))?;
        let s = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, String> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().unwrap()))
    }
    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().unwrap()))
    }
    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().unwrap()))
    }
    fn line(&mut self) -> Result<String, String> {
        let rest = &self.bytes[self.pos..];
        let n = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or("unterminated GLOBAL name")?;
        let s = String::from_utf8(rest[..n].to_vec()).map_err(|_| "GLOBAL name is not UTF-8")?;
        self.pos += n + 1;
        Ok(s)
    }
    fn utf8(&mut self, n: usize) -> Result<Value, String> {
        let s = std::str::from_utf8(self.take(n)?).map_err(|_| "string is not UTF-8")?;
        Ok(Value::Str(Rc::from(s)))
    }
    fn pop(&mut self) -> Result<Value, String> {
        self.stack
            .pop()
            .ok_or_else(|| "stack underflow".to_string())
    }
    fn top(&self) -> Result<&Value, String> {
        self.stack
            .last()
            .ok_or_else(|| "stack underflow".to_string())
    }
    /// Pops everything above the last MARK.
    fn pop_mark(&mut self) -> Result<Vec<Value>, String> {
        let h = self.marks.pop().ok_or("no MARK on the stack")?;
        if h > self.stack.len() {
            return Err("MARK above the stack top".into());
        }
        Ok(self.stack.split_off(h))
    }
    fn memo_get(&self, k: u32) -> Result<Value, String> {
        self.memo
            .get(&k)
            .cloned()
            .ok_or_else(|| format!("memo key {k} was never stored"))
    }
    fn set_items(&mut self, items: Vec<Value>) -> Result<(), String> {
        if items.len() % 2 != 0 {
            return Err("SETITEMS with an odd number of items".into());
        }
        let dict = match self.top()? {
            Value::Dict(d) => d.clone(),
            // OrderedDict() and friends: torch's state dicts are collections.OrderedDict objects
            Value::Object(o) => o.items.clone(),
            other => return Err(format!("SETITEM on a non-dict ({})", kind(other))),
        };
        let mut d = dict.borrow_mut();
        let mut it = items.into_iter();
        while let (Some(k), Some(v)) = (it.next(), it.next()) {
            d.push((k, v));
        }
        Ok(())
    }
    fn append(&mut self, items: Vec<Value>) -> Result<(), String> {
        match self.top()? {
            Value::List(l) => {
                l.borrow_mut().extend(items);
                Ok(())
            }
            other => Err(format!("APPEND on a non-list ({})", kind(other))),
        }
    }
    fn int_le(bytes: &[u8]) -> Result<i128, String> {
        if bytes.len() > 16 {
            return Err(format!("integer of {} bytes is too large", bytes.len()));
        }
        if bytes.is_empty() {
            return Ok(0);
        }
        // two's complement, little-endian, sign-extended to 128 bits
        let fill = if bytes[bytes.len() - 1] & 0x80 != 0 {
            0xff
        } else {
            0
        };
        let mut buf = [fill; 16];
        buf[..bytes.len()].copy_from_slice(bytes);
        Ok(i128::from_le_bytes(buf))
    }

    fn run(
        mut self,
        persistent_id: &mut dyn FnMut(&Value) -> Result<usize, String>,
    ) -> Result<(Value, usize), PickleError> {
        loop {
            let at = self.pos;
            match self.step(persistent_id) {
                Ok(Some(v)) => return Ok((v, self.pos)),
                Ok(None) => {}
                Err(reason) => return Err(PickleError { offset: at, reason }),
            }
        }
    }

    /// Executes one opcode; `Some` at STOP.
    fn step(
        &mut self,
        persistent_id: &mut dyn FnMut(&Value) -> Result<usize, String>,
    ) -> Result<Option<Value>, String> {
        let op = self.u8()?;
        match op {
            0x80 => {
                // PROTO
                let p = self.u8()?;
                if p > 5 {
                    return Err(format!("pickle protocol {p} is newer than 5"));
                }
            }
            0x95 => {
                // FRAME: a length hint only
                self.u64()?;
            }
            b'.' => return self.pop().map(Some),
            b'(' => self.marks.push(self.stack.len()),
            b'}' => self.stack.push(Value::Dict(Rc::default())),
            b']' => self.stack.push(Value::List(Rc::default())),
            b')' => self.stack.push(Value::Tuple(Rc::default())),
            b'N' => self.stack.push(Value::None),
            0x88 => self.stack.push(Value::Bool(true)),
            0x89 => self.stack.push(Value::Bool(false)),
            b'J' => {
                let v = i32::from_le_bytes(self.take(4)?.try_into().unwrap());
                self.stack.push(Value::Int(v as i128));
            }
            b'K' => {
                let v = self.u8()?;
                self.stack.push(Value::Int(v as i128));
            }
            b'M' => {
                let v = self.u16()?;
                self.stack.push(Value::Int(v as i128));
            }
            0x8a => {
                // LONG1
                let n = self.u8()? as usize;
                let v = Self::int_le(self.take(n)?)?;
                self.stack.push(Value::Int(v));
            }
            0x8b => {
                // LONG4
                let n = self.u32()? as usize;
                let v = Self::int_le(self.take(n)?)?;
                self.stack.push(Value::Int(v));
            }
            b'G' => {
                let v = f64::from_be_bytes(self.take(8)?.try_into().unwrap());
                self.stack.push(Value::Float(v));
            }
            b'X' => {
                let n = self.u32()? as usize;
                let v = self.utf8(n)?;
                self.stack.push(v);
            }
            0x8c => {
                // SHORT_BINUNICODE
                let n = self.u8()? as usize;
                let v = self.utf8(n)?;
                self.stack.push(v);
            }
            0x8d => {
                // BINUNICODE8
                let n = self.u64()? as usize;
                let v = self.utf8(n)?;
                self.stack.push(v);
            }
            b'T' | b'B' => {
                // BINSTRING (Python 2 str) / BINBYTES
                let n = self.u32()? as usize;
                let v = Value::Bytes(Rc::from(self.take(n)?));
                self.stack.push(v);
            }
            b'U' | b'C' => {
                // SHORT_BINSTRING / SHORT_BINBYTES
                let n = self.u8()? as usize;
                let v = Value::Bytes(Rc::from(self.take(n)?));
                self.stack.push(v);
            }
            0x8e => {
                // BINBYTES8
                let n = self.u64()? as usize;
                let v = Value::Bytes(Rc::from(self.take(n)?));
                self.stack.push(v);
            }
            b'q' => {
                let k = self.u8()? as u32;
                let v = self.top()?.clone();
                self.memo.insert(k, v);
            }
            b'r' => {
                let k = self.u32()?;
                let v = self.top()?.clone();
                self.memo.insert(k, v);
            }
            0x94 => {
                // MEMOIZE
                let k = self.memo.len() as u32;
                let v = self.top()?.clone();
                self.memo.insert(k, v);
            }
            b'h' => {
                let k = self.u8()? as u32;
                let v = self.memo_get(k)?;
                self.stack.push(v);
            }
            b'j' => {
                let k = self.u32()?;
                let v = self.memo_get(k)?;
                self.stack.push(v);
            }
            b'c' => {
                let module = self.line()?;
                let name = self.line()?;
                self.stack
                    .push(Value::Global(Rc::from(format!("{module}.{name}"))));
            }
            0x93 => {
                // STACK_GLOBAL
                let name = self.pop()?;
                let module = self.pop()?;
                match (module.as_str(), name.as_str()) {
                    (Some(m), Some(n)) => {
                        self.stack.push(Value::Global(Rc::from(format!("{m}.{n}"))))
                    }
                    _ => return Err("STACK_GLOBAL without two strings".into()),
                }
            }
            b'Q' => {
                // BINPERSID
                let pid = self.pop()?;
                let i = persistent_id(&pid)?;
                self.stack.push(Value::Persistent(i));
            }
            b't' => {
                let items = self.pop_mark()?;
                self.stack.push(Value::Tuple(Rc::new(items)));
            }
            0x85..=0x87 => {
                // TUPLE1..TUPLE3
                let n = (op - 0x84) as usize;
                if self.stack.len() < n {
                    return Err("stack underflow".into());
                }
                let items = self.stack.split_off(self.stack.len() - n);
                self.stack.push(Value::Tuple(Rc::new(items)));
            }
            b'l' => {
                let items = self.pop_mark()?;
                self.stack.push(Value::List(Rc::new(RefCell::new(items))));
            }
            b'd' => {
                let items = self.pop_mark()?;
                self.stack.push(Value::Dict(Rc::default()));
                self.set_items(items)?;
            }
            b's' => {
                let v = self.pop()?;
                let k = self.pop()?;
                self.set_items(vec![k, v])?;
            }
            b'u' => {
                let items = self.pop_mark()?;
                self.set_items(items)?;
            }
            b'a' => {
                let v = self.pop()?;
                self.append(vec![v])?;
            }
            b'e' => {
                let items = self.pop_mark()?;
                self.append(items)?;
            }
            b'R' | 0x81 => {
                // REDUCE / NEWOBJ: recorded, never called
                let args = self.pop()?;
                let callable = self.pop()?;
                let args = args.items().ok_or("REDUCE arguments are not a tuple")?;
                self.stack.push(Value::Object(Rc::new(Object {
                    callable,
                    args,
                    items: Rc::default(),
                    state: RefCell::new(None),
                })));
            }
            b'b' => {
                // BUILD: keep the state on objects, ignore it on anything else
                let state = self.pop()?;
                if let Value::Object(o) = self.top()? {
                    *o.state.borrow_mut() = Some(state);
                }
            }
            b'0' => {
                self.pop()?;
            }
            b'1' => {
                self.pop_mark()?;
            }
            b'2' => {
                let v = self.top()?.clone();
                self.stack.push(v);
            }
            other => return Err(format!("unsupported pickle opcode 0x{other:02x}")),
        }
        Ok(None)
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::None => "None",
        Value::Bool(_) => "bool",
        Value::Int(_) => "int",
        Value::Float(_) => "float",
        Value::Str(_) => "str",
        Value::Bytes(_) => "bytes",
        Value::Tuple(_) => "tuple",
        Value::List(_) => "list",
        Value::Dict(_) => "dict",
        Value::Global(_) => "global",
        Value::Object(_) => "object",
        Value::Persistent(_) => "persistent id",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_pid(_: &Value) -> Result<usize, String> {
        Err("no persistent ids here".into())
    }

    #[test]
    fn reads_a_protocol_2_dict_with_memo_and_big_int() {
        // python3 -c "import pickle; print(pickle.dumps({'a': [1, 2.5, None], 'b': (True, 'x'),
        //   'n': 0x1950a86a20f9469cfc6c, 'm': -300}, protocol=2))"
        let bytes: &[u8] = b"\x80\x02}q\x00(X\x01\x00\x00\x00aq\x01]q\x02(K\x01G@\x04\x00\x00\x00\x00\x00\x00Ne\
X\x01\x00\x00\x00bq\x03\x88X\x01\x00\x00\x00xq\x04\x86q\x05X\x01\x00\x00\x00nq\x06\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19\
X\x01\x00\x00\x00mq\x07J\xd4\xfe\xff\xffu.";
        let (v, used) = load(bytes, &mut no_pid).unwrap();
        assert_eq!(used, bytes.len());
        let d = v.dict_entries().unwrap();
        let keys: Vec<&str> = d.iter().map(|(k, _)| k.as_str().unwrap()).collect();
        assert_eq!(keys, ["a", "b", "n", "m"]);
        let a = d[0].1.items().unwrap();
        assert_eq!(a[0].as_int(), Some(1));
        assert!(matches!(a[1], Value::Float(f) if f == 2.5));
        assert!(matches!(a[2], Value::None));
        let b = d[1].1.items().unwrap();
        assert!(matches!(b[0], Value::Bool(true)));
        assert_eq!(b[1].as_str(), Some("x"));
        assert_eq!(d[2].1.as_int(), Some(0x1950a86a20f9469cfc6c));
        assert_eq!(d[3].1.as_int(), Some(-300));
    }

    #[test]
    fn memoised_dict_filled_later_is_seen_filled_through_the_memo() {
        // EMPTY_DICT BINPUT 0, then SETITEM 'k'→1, POP, BINGET 0, STOP: the memo shares the dict
        let bytes: &[u8] = b"\x80\x02}q\x00X\x01\x00\x00\x00kK\x01s0h\x00.";
        let (v, _) = load(bytes, &mut no_pid).unwrap();
        assert_eq!(v.dict_entries().unwrap().len(), 1);
    }

    #[test]
    fn reduce_is_recorded_not_called_and_setitems_fill_ordered_dicts() {
        // collections.OrderedDict() then SETITEMS {'w': 7}
        let bytes: &[u8] =
            b"\x80\x02ccollections\nOrderedDict\nq\x00)Rq\x01X\x01\x00\x00\x00wq\x02K\x07s.";
        let (v, _) = load(bytes, &mut no_pid).unwrap();
        let Value::Object(o) = &v else {
            panic!("not an object")
        };
        assert_eq!(o.callable.global_name(), Some("collections.OrderedDict"));
        let d = v.dict_entries().unwrap();
        assert_eq!(d[0].0.as_str(), Some("w"));
        assert_eq!(d[0].1.as_int(), Some(7));
    }

    #[test]
    fn truncated_and_unknown_input_are_errors_with_offsets() {
        let e = load(b"\x80\x02X\x09\x00\x00\x00ab", &mut no_pid).unwrap_err();
        assert!(e.reason.contains("truncated"), "{e}");
        assert_eq!(e.offset, 2);
        let e = load(b"\x80\x02\xff", &mut no_pid).unwrap_err();
        assert!(e.reason.contains("0xff"), "{e}");
        let e = load(b"\x80\x02(K\x01Q.", &mut no_pid).unwrap_err();
        assert!(e.reason.contains("no persistent ids"), "{e}");
        let e = load(b"", &mut no_pid).unwrap_err();
        assert!(e.reason.contains("truncated"), "{e}");
    }
}
