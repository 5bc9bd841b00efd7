//! A small, safe subset of Python's pickle machine: enough to read what `torch.save` writes (protocol 2, the
//! torch default, and the opcodes of protocols 3–5 that modern Pythons emit). It builds plain values and
//! never imports or calls anything: a `GLOBAL` becomes a name, and `REDUCE`/`NEWOBJ`/`BUILD` on a name become
//! an [`Value::Object`] holding the name and arguments, which the torch layer interprets (tensors, ordered
//! dicts) and everything else ignores. Persistent ids (torch storages) are resolved by a callback.
//!
//! Hostile input is expected: the machine is iterative (no recursion on the input's nesting), refuses
//! containers nested deeper than [`MAX_DEPTH`] and cycles (a container put inside itself, or changed after it
//! was put inside another), and bounds the memo and container counts. Shared references stay shared (`Rc`),
//! and no operation copies a container, so what a load allocates is a constant per opcode: a multiple of
//! the input's length, whatever a "billion laughs" pickle claims to expand to.
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

/// Deepest nesting of tuples, lists, dicts and objects accepted. Python's own pickler recurses on nesting,
/// so it cannot write anything deeper than its recursion limit (1000 by default); a state dict is ~6 deep.
/// Bounding it keeps every recursive walk of a [`Value`] (including `Drop`) far from the stack's end.
pub const MAX_DEPTH: usize = 1000;
/// Most memo entries and containers one pickle may create (a state dict uses ~10 per tensor): 2^24, so a
/// file cannot make the tables outgrow a few hundred MiB even if it is made of nothing else.
pub const MAX_MEMO: usize = 1 << 24;
pub const MAX_CONTAINERS: usize = 1 << 24;

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
    /// The argument tuple, shared, not copied: a tuple referenced by a million REDUCEs stays one tuple.
    pub args: Rc<Vec<Value>>,
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
    /// How many items a tuple or list holds, without copying them (check it before [`Value::items`]).
    pub fn item_count(&self) -> Option<usize> {
        match self {
            Value::Tuple(t) => Some(t.len()),
            Value::List(l) => Some(l.borrow().len()),
            _ => None,
        }
    }
    /// Whether [`Value::dict_entries`] would give entries.
    pub fn is_dict(&self) -> bool {
        match self {
            Value::Dict(_) => true,
            Value::Object(o) => o.callable.global_name() == Some("collections.OrderedDict"),
            _ => false,
        }
    }
    /// Items of a tuple or list (a shallow copy: the items themselves stay shared).
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
    /// The Python type a value came from, for messages (a value itself is never printed: a shared
    /// structure can stand for more items than memory holds).
    pub fn kind(&self) -> &'static str {
        match self {
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
    /// Address of the container a value is, as a key of the machine's container table.
    fn container_addr(&self) -> Option<usize> {
        match self {
            Value::Tuple(t) => Some(Rc::as_ptr(t) as *const () as usize),
            Value::List(l) => Some(Rc::as_ptr(l) as *const () as usize),
            Value::Dict(d) => Some(Rc::as_ptr(d) as *const () as usize),
            Value::Object(o) => Some(Rc::as_ptr(o) as *const () as usize),
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
        memo: HashMap::new(),
        containers: HashMap::new(),
        keep: Vec::new(),
    }
    .run(persistent_id)
}

/// What the machine knows about one container it built.
struct ContainerInfo {
    /// 1 for a container of scalars, 1 + the deepest item otherwise.
    depth: usize,
    /// Whether it has been put inside another container. From then on it may not change: its depth is
    /// final (no parent's depth goes stale) and no cycle can form.
    contained: bool,
}

struct Machine<'a> {
    bytes: &'a [u8],
    pos: usize,
    stack: Vec<Value>,
    /// Stack heights at each MARK.
    marks: Vec<usize>,
    memo: HashMap<u32, Value>,
    /// Every container built, by address.
    containers: HashMap<usize, ContainerInfo>,
    /// Keeps each container alive while the machine runs, so no address in `containers` is reused.
    keep: Vec<Value>,
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
    fn memo_put(&mut self, k: u32, v: Value) -> Result<(), String> {
        if self.memo.len() >= MAX_MEMO && !self.memo.contains_key(&k) {
            return Err(format!("more than {MAX_MEMO} memo entries"));
        }
        self.memo.insert(k, v);
        Ok(())
    }
    /// Records that `items` now sit inside the container at `parent`; returns the depth they give it.
    fn adopt(&mut self, parent: usize, items: &[&Value]) -> Result<usize, String> {
        let mut depth = 1;
        for v in items {
            let Some(a) = v.container_addr() else {
                continue;
            };
            if a == parent {
                return Err(
                    "a container holds itself (recursive structures are not supported)".into(),
                );
            }
            let c = self
                .containers
                .get_mut(&a)
                .ok_or("internal: container built outside the machine")?;
            c.contained = true;
            depth = depth.max(c.depth + 1);
        }
        if depth > MAX_DEPTH {
            return Err(format!("containers nested deeper than {MAX_DEPTH}"));
        }
        Ok(depth)
    }
    /// Registers a new container holding `items`, and returns it.
    fn new_container(&mut self, v: Value, items: &[&Value]) -> Result<Value, String> {
        if self.containers.len() >= MAX_CONTAINERS {
            return Err(format!("more than {MAX_CONTAINERS} containers"));
        }
        let a = v.container_addr().ok_or("internal: not a container")?;
        let depth = self.adopt(a, items)?;
        self.containers.insert(
            a,
            ContainerInfo {
                depth,
                contained: false,
            },
        );
        self.keep.push(v.clone());
        Ok(v)
    }
    fn push_container(&mut self, v: Value, items: &[&Value]) -> Result<(), String> {
        let v = self.new_container(v, items)?;
        self.stack.push(v);
        Ok(())
    }
    /// Before `items` are added to the existing container `target`: it must not be inside another one yet.
    fn grow(&mut self, target: &Value, items: &[&Value]) -> Result<(), String> {
        let a = target.container_addr().ok_or("internal: not a container")?;
        if self.containers.get(&a).is_some_and(|c| c.contained) {
            return Err(format!(
                "a {} is changed after it was put inside another container (a cycle, or not pickle's order)",
                target.kind()
            ));
        }
        let depth = self.adopt(a, items)?;
        if let Some(c) = self.containers.get_mut(&a) {
            c.depth = c.depth.max(depth);
        }
        Ok(())
    }
    fn set_items(&mut self, items: Vec<Value>) -> Result<(), String> {
        if items.len() % 2 != 0 {
            return Err("SETITEMS with an odd number of items".into());
        }
        let target = self.top()?.clone();
        let dict = match &target {
            Value::Dict(d) => d.clone(),
            // OrderedDict() and friends: torch's state dicts are collections.OrderedDict objects
            Value::Object(o) => o.items.clone(),
            other => return Err(format!("SETITEM on a non-dict ({})", other.kind())),
        };
        self.grow(&target, &items.iter().collect::<Vec<_>>())?;
        let mut d = dict.borrow_mut();
        let mut it = items.into_iter();
        while let (Some(k), Some(v)) = (it.next(), it.next()) {
            d.push((k, v));
        }
        Ok(())
    }
    fn append(&mut self, items: Vec<Value>) -> Result<(), String> {
        let target = self.top()?.clone();
        match &target {
            Value::List(l) => {
                self.grow(&target, &items.iter().collect::<Vec<_>>())?;
                l.borrow_mut().extend(items);
                Ok(())
            }
            other => Err(format!("APPEND on a non-list ({})", other.kind())),
        }
    }
    fn push_tuple(&mut self, items: Vec<Value>) -> Result<(), String> {
        let t = Rc::new(items);
        let refs: Vec<&Value> = t.iter().collect();
        let v = Value::Tuple(t.clone());
        let v = self.new_container(v, &refs)?;
        self.stack.push(v);
        Ok(())
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
            b'}' => self.push_container(Value::Dict(Rc::default()), &[])?,
            b']' => self.push_container(Value::List(Rc::default()), &[])?,
            b')' => self.push_tuple(Vec::new())?,
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
                self.memo_put(k, v)?;
            }
            b'r' => {
                let k = self.u32()?;
                let v = self.top()?.clone();
                self.memo_put(k, v)?;
            }
            0x94 => {
                // MEMOIZE
                let k = self.memo.len() as u32;
                let v = self.top()?.clone();
                self.memo_put(k, v)?;
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
                self.push_tuple(items)?;
            }
            0x85..=0x87 => {
                // TUPLE1..TUPLE3
                let n = (op - 0x84) as usize;
                if self.stack.len() < n {
                    return Err("stack underflow".into());
                }
                let items = self.stack.split_off(self.stack.len() - n);
                self.push_tuple(items)?;
            }
            b'l' => {
                let items = self.pop_mark()?;
                self.push_container(Value::List(Rc::default()), &[])?;
                self.append(items)?;
            }
            b'd' => {
                let items = self.pop_mark()?;
                self.push_container(Value::Dict(Rc::default()), &[])?;
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
                let args_value = self.pop()?;
                let callable = self.pop()?;
                let Value::Tuple(args) = &args_value else {
                    return Err(format!(
                        "REDUCE arguments are a {}, not a tuple",
                        args_value.kind()
                    ));
                };
                let o = Value::Object(Rc::new(Object {
                    callable: callable.clone(),
                    args: args.clone(),
                    items: Rc::default(),
                    state: RefCell::new(None),
                }));
                self.push_container(o, &[&callable, &args_value])?;
            }
            b'b' => {
                // BUILD: keep the state on objects, ignore it on anything else
                let state = self.pop()?;
                let target = self.top()?.clone();
                if let Value::Object(o) = &target {
                    self.grow(&target, &[&state])?;
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

    #[test]
    fn cycles_are_refused() {
        // l = []; l.append(l)
        let e = load(b"\x80\x02]q\x00h\x00a.", &mut no_pid).unwrap_err();
        assert!(e.reason.contains("holds itself"), "{e}");
        // l = []; t = (l,); l.append(t): l is changed after it went inside t
        let e = load(b"\x80\x02]q\x00h\x00\x85a.", &mut no_pid).unwrap_err();
        assert!(e.reason.contains("after it was put inside"), "{e}");
    }

    #[test]
    fn nesting_is_capped_at_max_depth() {
        let nested = |n: usize| {
            let mut b = b"\x80\x02)".to_vec();
            b.extend(std::iter::repeat_n(0x85, n));
            b.push(b'.');
            b
        };
        // the empty tuple is depth 1: MAX_DEPTH - 1 wrappers reach the cap exactly
        assert!(load(&nested(MAX_DEPTH - 1), &mut no_pid).is_ok());
        let e = load(&nested(MAX_DEPTH), &mut no_pid).unwrap_err();
        assert!(e.reason.contains("nested deeper than 1000"), "{e}");
        // depth also grows through APPEND into a list that is not inside anything yet
        let mut b = b"\x80\x02]".to_vec();
        b.push(b')');
        b.extend(std::iter::repeat_n(0x85, MAX_DEPTH - 1));
        b.extend(b"a.");
        let e = load(&b, &mut no_pid).unwrap_err();
        assert!(e.reason.contains("nested deeper"), "{e}");
    }

    #[test]
    fn reduce_shares_its_argument_tuple_and_wants_a_tuple() {
        let (v, _) = load(
            b"\x80\x02cm\nf\nK\x01\x85q\x00Rcm\nf\nh\x00R\x86.",
            &mut no_pid,
        )
        .unwrap();
        let items = v.items().unwrap();
        let (Value::Object(a), Value::Object(b)) = (&items[0], &items[1]) else {
            panic!("not objects")
        };
        assert!(Rc::ptr_eq(&a.args, &b.args));
        let e = load(b"\x80\x02cm\nf\n]R.", &mut no_pid).unwrap_err();
        assert!(e.reason.contains("not a tuple"), "{e}");
    }
}
