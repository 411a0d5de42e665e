//! Label selectors (`metav1.LabelSelector`, validated as upstream's
//! `ValidateLabelSelector`): `matchLabels` and `matchExpressions` with their operators.

use serde_json::Value;

use super::*;

pub(super) fn validate_label_selector(sel: &Value, path: &str, errs: &mut Errs) {
    if let Some(ml) = get(sel, "matchLabels") {
        errs.extend(validate_labels(ml, &child(path, "matchLabels")));
    }
    let exprs_path = child(path, "matchExpressions");
    for (i, expr) in get_arr(sel, "matchExpressions").iter().enumerate() {
        let p = index(&exprs_path, i);
        let values = get_arr(expr, "values");
        match get_str(expr, "operator") {
            Some("In") | Some("NotIn") => {
                if values.is_empty() {
                    errs.push(FieldError::required(
                        child(&p, "values"),
                        "must be specified when `operator` is 'In' or 'NotIn'",
                    ));
                }
            }
            Some("Exists") | Some("DoesNotExist") => {
                if !values.is_empty() {
                    errs.push(FieldError::forbidden(
                        child(&p, "values"),
                        "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
                    ));
                }
            }
            other => {
                errs.push(FieldError::invalid_str(
                    child(&p, "operator"),
                    other.unwrap_or(""),
                    "not a valid selector operator",
                ));
            }
        }
        let k = get_str(expr, "key").unwrap_or("");
        for msg in is_qualified_name(k) {
            errs.push(FieldError::invalid_str(child(&p, "key"), k, msg));
        }
        for (j, v) in values.iter().enumerate() {
            if let Some(s) = v.as_str() {
                for msg in is_valid_label_value(s) {
                    errs.push(FieldError::invalid_str(index(&child(&p, "values"), j), s, msg));
                }
            }
        }
    }
}
