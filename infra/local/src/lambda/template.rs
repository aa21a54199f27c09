//! The functions of template.yaml as Lambda would run them: each one's
//! handler, memory, timeout and environment (Globals merged with its own),
//! with the intrinsic functions (`!Ref`, `!GetAtt`, `!Sub`, dynamic
//! references) resolved against a set of provisioned resources, the way
//! CloudFormation resolves them at deploy time.

use std::collections::BTreeMap;
use std::path::Path;

use serde_yaml_ng::Value;

#[derive(Debug, thiserror::Error)]
#[error("template: {0}")]
pub struct TemplateError(pub String);

fn err(message: impl Into<String>) -> TemplateError {
    TemplateError(message.into())
}

/// One `AWS::Serverless::Function`.
#[derive(Debug, Clone)]
pub struct FunctionDef {
    pub logical_id: String,
    /// `Handler`: the hanul function the binary runs (`_HANDLER`).
    pub handler: String,
    pub memory_mb: u64,
    pub timeout_s: u64,
    /// Unresolved: Globals' variables, then the function's own.
    pub environment: BTreeMap<String, Value>,
}

/// A parsed template.
pub struct Template {
    root: Value,
}

/// CloudFormation's short tags (`!Ref X`) parse as tagged values.
fn untag(v: &Value) -> &Value {
    match v {
        Value::Tagged(t) => &t.value,
        other => other,
    }
}

fn at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    let mut cur = v;
    for key in path {
        cur = untag(cur).get(*key)?;
    }
    Some(untag(cur))
}

fn scalar(v: &Value) -> Option<String> {
    match untag(v) {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

impl Template {
    pub fn load(path: &Path) -> Result<Self, TemplateError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| err(format!("cannot read {}: {e}", path.display())))?;
        Self::parse(&text)
    }

    pub fn parse(text: &str) -> Result<Self, TemplateError> {
        let root: Value =
            serde_yaml_ng::from_str(text).map_err(|e| err(format!("not YAML: {e}")))?;
        if at(&root, &["Resources"])
            .and_then(Value::as_mapping)
            .is_none()
        {
            return Err(err("no Resources"));
        }
        Ok(Self { root })
    }

    /// `(logical id, resource)` of every resource.
    pub fn resources(&self) -> impl Iterator<Item = (String, &Value)> {
        at(&self.root, &["Resources"])
            .and_then(Value::as_mapping)
            .into_iter()
            .flatten()
            .filter_map(|(k, v)| Some((k.as_str()?.to_owned(), v)))
    }

    pub fn resource_type(&self, logical_id: &str) -> Option<String> {
        at(&self.root, &["Resources", logical_id, "Type"]).and_then(scalar)
    }

    pub fn resource(&self, logical_id: &str) -> Option<&Value> {
        at(&self.root, &["Resources", logical_id])
    }

    /// The resources of one type, by logical id.
    pub fn of_type(&self, kind: &str) -> Vec<String> {
        self.resources()
            .filter(|(_, r)| at(r, &["Type"]).and_then(scalar).as_deref() == Some(kind))
            .map(|(id, _)| id)
            .collect()
    }

    /// A parameter's default, if it has one.
    pub fn parameter_default(&self, name: &str) -> Option<String> {
        at(&self.root, &["Parameters", name, "Default"]).and_then(scalar)
    }

    pub fn parameter_names(&self) -> Vec<String> {
        at(&self.root, &["Parameters"])
            .and_then(Value::as_mapping)
            .into_iter()
            .flatten()
            .filter_map(|(k, _)| k.as_str().map(str::to_owned))
            .collect()
    }

    pub fn functions(&self) -> Result<Vec<FunctionDef>, TemplateError> {
        let globals = at(&self.root, &["Globals", "Function"]);
        let global_number = |key: &str| globals.and_then(|g| at(g, &[key])).and_then(scalar);
        let mut global_env = BTreeMap::new();
        if let Some(vars) = globals
            .and_then(|g| at(g, &["Environment", "Variables"]))
            .and_then(Value::as_mapping)
        {
            for (k, v) in vars {
                if let Some(k) = k.as_str() {
                    global_env.insert(k.to_owned(), v.clone());
                }
            }
        }
        let mut out = Vec::new();
        for id in self.of_type("AWS::Serverless::Function") {
            let props = self
                .resource(&id)
                .and_then(|r| at(r, &["Properties"]))
                .ok_or_else(|| err(format!("{id} has no Properties")))?;
            let value = |key: &str| {
                at(props, &[key])
                    .and_then(scalar)
                    .or_else(|| global_number(key))
            };
            let handler = value("Handler").ok_or_else(|| err(format!("{id} has no Handler")))?;
            let number = |key: &str, default: u64| -> Result<u64, TemplateError> {
                match value(key) {
                    None => Ok(default),
                    Some(v) => v
                        .parse()
                        .map_err(|_| err(format!("{id}: {key} is not a number: {v}"))),
                }
            };
            let mut environment = global_env.clone();
            if let Some(vars) = at(props, &["Environment", "Variables"]).and_then(Value::as_mapping)
            {
                for (k, v) in vars {
                    if let Some(k) = k.as_str() {
                        environment.insert(k.to_owned(), v.clone());
                    }
                }
            }
            out.push(FunctionDef {
                logical_id: id.clone(),
                handler,
                memory_mb: number("MemorySize", 128)?,
                timeout_s: number("Timeout", 3)?,
                environment,
            });
        }
        Ok(out)
    }
}

/// What `!Ref`, `!GetAtt` and dynamic references resolve to.
pub trait Resolve {
    /// A parameter's value (an override, else the template's default).
    fn parameter(&self, name: &str) -> Option<String>;
    /// `!Ref` of a resource.
    fn reference(&self, logical_id: &str) -> Option<String>;
    /// `!GetAtt logical_id.attribute`.
    fn attribute(&self, logical_id: &str, attribute: &str) -> Option<String>;
    /// `{{resolve:secretsmanager:<secret>:SecretString}}`.
    fn secret(&self, secret: &str) -> Option<String>;
}

pub const REGION: &str = "us-east-1";
pub const ACCOUNT: &str = "123456789012";
pub const STACK: &str = "hanul";

fn pseudo(name: &str) -> Option<&'static str> {
    Some(match name {
        "AWS::Region" => REGION,
        "AWS::AccountId" => ACCOUNT,
        "AWS::StackName" => STACK,
        "AWS::Partition" => "aws",
        "AWS::URLSuffix" => "amazonaws.com",
        _ => return None,
    })
}

fn reference(name: &str, with: &dyn Resolve) -> Result<String, TemplateError> {
    if let Some(v) = pseudo(name) {
        return Ok(v.to_owned());
    }
    with.parameter(name)
        .or_else(|| with.reference(name))
        .ok_or_else(|| err(format!("!Ref {name}: no such parameter value or resource")))
}

fn attribute(target: &str, with: &dyn Resolve) -> Result<String, TemplateError> {
    let (id, attr) = target
        .split_once('.')
        .ok_or_else(|| err(format!("!GetAtt {target}: expected Resource.Attribute")))?;
    with.attribute(id, attr)
        .ok_or_else(|| err(format!("!GetAtt {target}: not provisioned")))
}

/// `${Name}`, `${Resource.Attr}` and `${!Literal}` in a `!Sub` string.
fn substitute(
    text: &str,
    vars: &BTreeMap<String, String>,
    with: &dyn Resolve,
) -> Result<String, TemplateError> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| err(format!("!Sub {text:?}: unclosed ${{")))?;
        let name = &after[..end];
        if let Some(literal) = name.strip_prefix('!') {
            out.push_str("${");
            out.push_str(literal);
            out.push('}');
        } else if let Some(v) = vars.get(name) {
            out.push_str(v);
        } else if name.contains('.') && pseudo(name).is_none() {
            out.push_str(&attribute(name, with)?);
        } else {
            out.push_str(&reference(name, with)?);
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    dynamic_references(&out, with)
}

/// `{{resolve:secretsmanager:<id>:SecretString}}`, resolved as
/// CloudFormation does at deploy time.
fn dynamic_references(text: &str, with: &dyn Resolve) -> Result<String, TemplateError> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("{{resolve:") {
        out.push_str(&rest[..start]);
        let after = &rest[start + "{{resolve:".len()..];
        let end = after
            .find("}}")
            .ok_or_else(|| err(format!("{text:?}: unclosed dynamic reference")))?;
        let spec = &after[..end];
        let secret = spec
            .strip_prefix("secretsmanager:")
            .and_then(|s| s.strip_suffix(":SecretString"))
            .ok_or_else(|| {
                err(format!(
                    "{{{{resolve:{spec}}}}}: only secretsmanager SecretString is supported"
                ))
            })?;
        out.push_str(
            &with
                .secret(secret)
                .ok_or_else(|| err(format!("secret {secret} is not provisioned")))?,
        );
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The value of one environment variable as the function would see it.
pub fn resolve(value: &Value, with: &dyn Resolve) -> Result<String, TemplateError> {
    if let Value::Tagged(tagged) = value {
        let tag = tagged.tag.to_string();
        let inner = &tagged.value;
        return match tag.trim_start_matches('!') {
            "Ref" => reference(
                &scalar(inner).ok_or_else(|| err("!Ref takes a name"))?,
                with,
            ),
            "GetAtt" => match inner {
                Value::Sequence(parts) => {
                    let parts: Vec<String> = parts.iter().filter_map(scalar).collect();
                    attribute(&parts.join("."), with)
                }
                other => attribute(
                    &scalar(other).ok_or_else(|| err("!GetAtt takes a name"))?,
                    with,
                ),
            },
            "Sub" => match inner {
                Value::Sequence(parts) => {
                    let text = parts
                        .first()
                        .and_then(scalar)
                        .ok_or_else(|| err("!Sub [text, vars]: no text"))?;
                    let mut vars = BTreeMap::new();
                    if let Some(map) = parts.get(1).and_then(Value::as_mapping) {
                        for (k, v) in map {
                            if let Some(k) = k.as_str() {
                                vars.insert(k.to_owned(), resolve(v, with)?);
                            }
                        }
                    }
                    substitute(&text, &vars, with)
                }
                other => substitute(
                    &scalar(other).ok_or_else(|| err("!Sub takes a string"))?,
                    &BTreeMap::new(),
                    with,
                ),
            },
            other => Err(err(format!("!{other} is not supported in an environment"))),
        };
    }
    match value {
        Value::Mapping(map) if map.len() == 1 => {
            let (k, v) = map.iter().next().ok_or_else(|| err("empty mapping"))?;
            let tag = match k.as_str() {
                Some("Ref") => "!Ref",
                Some("Fn::GetAtt") => "!GetAtt",
                Some("Fn::Sub") => "!Sub",
                _ => return Err(err(format!("unsupported value {value:?}"))),
            };
            let tagged = Value::Tagged(Box::new(serde_yaml_ng::value::TaggedValue {
                tag: serde_yaml_ng::value::Tag::new(tag),
                value: v.clone(),
            }));
            resolve(&tagged, with)
        }
        other => scalar(other)
            .map(|s| dynamic_references(&s, with))
            .unwrap_or_else(|| Err(err(format!("unsupported value {other:?}")))),
    }
}

/// The function's environment, resolved.
pub fn environment(
    function: &FunctionDef,
    with: &dyn Resolve,
) -> Result<BTreeMap<String, String>, TemplateError> {
    function
        .environment
        .iter()
        .map(|(k, v)| {
            resolve(v, with)
                .map(|v| (k.clone(), v))
                .map_err(|e| err(format!("{}: {k}: {}", function.logical_id, e.0)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed;

    impl Resolve for Fixed {
        fn parameter(&self, name: &str) -> Option<String> {
            (name == "Base").then(|| "https://hnl.example".to_owned())
        }
        fn reference(&self, id: &str) -> Option<String> {
            match id {
                "Queue" => Some("http://moto/123/Queue".into()),
                "Secret" => Some("arn:secret:Secret".into()),
                _ => None,
            }
        }
        fn attribute(&self, id: &str, attr: &str) -> Option<String> {
            (id == "Queue" && attr == "Arn").then(|| "arn:aws:sqs:us-east-1:1:Queue".to_owned())
        }
        fn secret(&self, secret: &str) -> Option<String> {
            (secret == "arn:secret:Secret").then(|| "s3cr3t".to_owned())
        }
    }

    const TEMPLATE: &str = r#"
Globals:
  Function:
    Timeout: 10
    Environment:
      Variables:
        RUST_LOG: info
        QUEUE: !Ref Queue
Resources:
  One:
    Type: AWS::Serverless::Function
    Properties:
      Handler: one
      MemorySize: 512
      Environment:
        Variables:
          BASE: !Ref Base
          ARN: !GetAtt Queue.Arn
          ISSUER: !Sub "https://idp.${AWS::Region}.example/${Base}"
          KEYS: !Sub "internal:{{resolve:secretsmanager:${Secret}:SecretString}}"
          LITERAL: !Sub "${!NotAVar}"
          COUNT: 5
"#;

    #[test]
    fn environment_is_resolved_as_cloudformation_would() {
        let template = Template::parse(TEMPLATE).unwrap();
        let functions = template.functions().unwrap();
        assert_eq!(functions.len(), 1);
        let one = &functions[0];
        assert_eq!(
            (one.handler.as_str(), one.memory_mb, one.timeout_s),
            ("one", 512, 10)
        );
        let env = environment(one, &Fixed).unwrap();
        assert_eq!(env["RUST_LOG"], "info");
        assert_eq!(env["QUEUE"], "http://moto/123/Queue");
        assert_eq!(env["BASE"], "https://hnl.example");
        assert_eq!(env["ARN"], "arn:aws:sqs:us-east-1:1:Queue");
        assert_eq!(
            env["ISSUER"],
            "https://idp.us-east-1.example/https://hnl.example"
        );
        assert_eq!(env["KEYS"], "internal:s3cr3t");
        assert_eq!(env["LITERAL"], "${NotAVar}");
        assert_eq!(env["COUNT"], "5");
    }

    #[test]
    fn an_unknown_reference_names_the_function_and_variable() {
        let template = Template::parse(&TEMPLATE.replace("!Ref Base", "!Ref Missing")).unwrap();
        let functions = template.functions().unwrap();
        let e = environment(&functions[0], &Fixed).unwrap_err().to_string();
        assert!(e.contains("One: BASE") && e.contains("Missing"), "{e}");
    }
}
